"""The node's front end: whole-shard PUTs (and shard GETs from the first frame:
`nodes.leanget`) served straight off the socket, everything else by aiohttp.

A one-segment object's shards (262,200 bytes for 1 MiB) reach a node as one PUT each with
a `Content-Length`, from the gateway's lean sender (`storage.shards.sender`). Through
aiohttp each cost the node about as much CPU in request plumbing (parser callbacks,
request and response objects, router, middlewares, payload reader) as in the work itself.
`LeanFront` reads such a request's head and its whole body into one buffer (`recv_into`,
no chunk objects), then runs the same checks and durable commit as the streamed handler
(`handlers.put_target`, `PutChecks`, `commit_put`: signature and replay check, frames,
header against the URL, body MAC, temp file, fsync, link, directory fsync before the 201)
and writes the answer itself, with the same metrics and log line (`"front": "lean"`).

Anything else on the connection — another method or path, a query (but a GET's
`first=0&count=N`), a GET with a body, a body past the shard cap (one past
`LEAN_MAX_BODY` is streamed: `nodes.leanstream`), a chunked body, `Expect`, `Upgrade`,
HTTP/1.0, a head this parser does not fully accept, a request whose signature already
fails (no body is buffered for it) — is handed to aiohttp's request handler with every
byte received so far, and the connection stays with aiohttp from then on: nothing aiohttp
would refuse is accepted here. aiohttp's handler there holds each head to a size and a time
(`storage.headguard`): it has no deadline on a head of its own.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from nodes.app import record_request, request_id_of
from nodes.handlers import (
    REQUEST_ID_HEADER,
    ApiError,
    NodeState,
    PutChecks,
    RequestStats,
    _disk,
    commit_put,
    put_target,
)
from nodes.leanget import lean_get
from nodes.leanstream import BodyStream, give_stream, stream_put, take_stream
from storage.headguard import HEAD_MAX_BYTES, capped_handler, closing_answer
from storage.shards.auth import TRAILER_BYTES
from storage.shards.format import HEADER_BYTES
from storage.widereads import WideBudget

LEAN_MAX_BODY = 1024 * 1024 + 64 * 1024 + TRAILER_BYTES  # a shard of up to ~1 MiB, whole
HEAD_MAX = 8192  # a longer head goes to aiohttp (which has its own limits)
HANDED_HEAD_TIMEOUT_S = 20.0  # a head aiohttp took over must be complete within this
# (and under `storage.headguard.HEAD_MAX_BYTES`), as must each later head on the connection
KEEPALIVE_S = 75.0  # idle connections closed after this, as aiohttp's default; a body
# that makes no progress for as long is cut (one that keeps arriving never is)
BODY_BUDGET_BYTES = 64 * 1024 * 1024  # bodies buffered at once, before their signature is
# checked: past it, a request goes to aiohttp (which streams it) instead of a new buffer
BODY_BUDGET = WideBudget(BODY_BUDGET_BYTES)  # the process's
SHARD_PREFIX = "/v1/shards/"
_HEAD_OK = re.compile(rb"[\x20-\x7e\t\r\n]*\Z")  # printable ASCII; anything else: aiohttp
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_GET_QUERY = re.compile(r"first=0&count=([0-9]{1,19})\Z")  # the gateway's read from frame 0


class LeanRequest:
    """A parsed head this front end serves: PUT /v1/shards/<id> with a Content-Length, or
    GET /v1/shards/<id> (optionally `?first=0&count=N`) without a body."""

    __slots__ = ("method", "target", "path", "query", "count", "headers", "length", "close",
                 "vouched")

    def __init__(self, target: str, headers: CIMultiDict[str], length: int,
                 close: bool, method: str = "PUT", count: int | None = None) -> None:
        self.method = method
        self.target = target
        self.path, _, self.query = target.partition("?")
        self.count = count  # a GET's frames (None: all)
        self.headers = headers
        self.length = length
        self.close = close
        self.vouched: tuple[float, str] | None = None  # what `Verifier.vouch` found


def parse_lean_head(raw: bytes, max_body: int = LEAN_MAX_BODY) -> LeanRequest | None:
    """The request in `raw` (its head without the blank line), or None when it is not one
    this front end serves exactly as aiohttp would (or a PUT body past `max_body`): then
    aiohttp takes the connection."""
    if not _HEAD_OK.match(raw):
        return None
    lines = raw.decode("ascii").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] not in ("PUT", "GET") or parts[2] != "HTTP/1.1":
        return None
    method, target = parts[0], parts[1]
    path, qmark, query = target.partition("?")
    count = None
    if qmark:
        found = _GET_QUERY.match(query) if method == "GET" else None
        if found is None:
            return None  # another query, or a read from a later frame: aiohttp's
        count = int(found[1])
    rest = path[len(SHARD_PREFIX):]
    if not path.startswith(SHARD_PREFIX) or rest in ("", ".", "..") or \
            any(c in rest for c in "?%#/"):
        return None  # an escape or a dot segment: aiohttp's URL rules apply
    headers: CIMultiDict[str] = CIMultiDict()
    length: int | None = None
    close = False
    for line in lines[1:]:
        if "\r" in line or "\n" in line:
            return None
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            return None
        value = value.strip(" \t")
        low = name.lower()
        if low == "content-length":
            if length is not None or method == "GET" or not value.isdigit() or len(value) > 12:
                return None
            length = int(value)
        elif low in ("transfer-encoding", "expect", "upgrade"):
            return None
        elif low == "connection":
            tokens = {t.strip() for t in value.lower().split(",")}
            if "upgrade" in tokens:
                return None
            close = close or "close" in tokens
        headers.add(name, value)
    if method == "GET":
        return LeanRequest(target, headers, 0, close, method, count)
    if length is None or length > max_body:
        return None
    return LeanRequest(target, headers, length, close)


async def lean_put(st: NodeState, stats: RequestStats, req: LeanRequest,
                   body: bytearray) -> dict[str, Any]:
    """Check and commit one whole shard PUT (the streamed handler's checks, in its order);
    the 201 answer's document, or ApiError."""
    reason = await (st.verifier.check_async("PUT", req.target, req.headers)
                    if req.vouched is None else st.verifier.check_vouched_async(req.vouched))
    if reason is not None:
        raise ApiError(401, "unauthorized", reason)
    target = put_target(st, req.target[len(SHARD_PREFIX):], req.headers, req.length)
    stats.bytes_in = len(body)
    committed = False
    writer = await _disk(st.store.begin_put(target.sid))
    try:
        writer.digest = st.verifier.whole_body_mac(req.headers)  # fed the one whole body
        view = memoryview(body)
        cut = max(0, len(body) - TRAILER_BYTES)
        checks = PutChecks(st, target.stripe, target.index, target.expect)
        for piece in (view[:min(cut, HEADER_BYTES)], view[HEADER_BYTES:cut]):
            if piece:  # the header checked before the frames, as a stream would be
                checks.feed(piece)
        segments = checks.finish(len(body) - cut)
        size = await commit_put(writer, target.sid, [view[:cut]], bytes(view[cut:]),
                                target.replace)
        committed = True
    finally:
        st.metrics.bytes_in.inc(stats.bytes_in)
        if not committed:
            await writer.abort()
    st.metrics.shard_writes.inc()
    return {"id": target.sid, "bytes": size, "segments": segments}


class _DateCache:
    """The `Date` header's value, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True)
        return self._value


_date = _DateCache()


def _head_too_large() -> bytes:
    """The answer to a head over `HEAD_MAX_BYTES` (the connection then closes)."""
    body = json.dumps({"error": "too_large",
                       "message": f"request head over {HEAD_MAX_BYTES} bytes"}).encode()
    return closing_answer(431, "application/json; charset=utf-8", body)


class LeanFront(asyncio.BufferedProtocol):
    """One connection: whole-shard PUTs here, the rest handed to aiohttp (see module doc)."""

    def __init__(self, st: NodeState, server: web.Server, conns: set[LeanFront]) -> None:
        self._st = st
        self._server = server
        self._conns = conns
        self.transport: asyncio.Transport | None = None
        self._head = bytearray(HEAD_MAX * 2)  # heads, and bytes after a body (never pipelined
        self._have = 0  # by the gateway, but kept for the next request all the same)
        self._req: LeanRequest | None = None  # the request whose body is being read
        self._body = bytearray()
        self._got = 0
        self._stream: BodyStream | None = None  # a larger PUT's body, streamed (leanstream)
        self.busy: asyncio.Task[None] | None = None  # the request being served
        self._idle: asyncio.TimerHandle | None = None
        self._idle_got = -1  # body bytes received when the idle timer was armed
        self._closing = False
        self._write_paused = False  # the peer is not reading our answers: serve nothing more

    # -- asyncio.BufferedProtocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._conns.add(self)
        self._arm_idle()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._stream is not None and self._stream.receiving:
            return self._stream.get_buffer()
        if self._req is not None and self.busy is None:
            return memoryview(self._body)[self._got:]
        return memoryview(self._head)[self._have:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._stream is not None and self._stream.receiving:
            self._stream.received(nbytes)
            return
        if self._req is not None and self.busy is None:
            self._got += nbytes
            if self._got == len(self._body):
                self._start()
            return
        self._have += nbytes
        if self.busy is not None or self._write_paused:
            if self._have == len(self._head) and self.transport is not None:
                self.transport.pause_reading()  # resumed once the answer is out
            return
        self._next()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.busy is None and not self._closing:
            self._go_on()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._conns.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._stream is not None:
            self._stream.connection_lost()  # its serving task aborts the upload
        req = self._req
        if req is not None and self.busy is None:  # the body never arrived whole
            self._give_body()
            stats = RequestStats(request_id=request_id_of(req.headers), bytes_in=self._got)
            stats.extra["front"] = "lean"
            record_request(self._st, stats, "PUT", req.target, "", "put", 400, 0.0)
            self._st.metrics.bytes_in.inc(self._got)
            self._req = None

    # -- requests --------------------------------------------------------------------------

    def _next(self) -> None:
        """Parse the next request's head from what was received; serve it or hand off."""
        end = self._head.find(b"\r\n\r\n", 0, self._have)
        if end < 0:
            if self._have >= HEAD_MAX:
                self._hand_off()
            return
        cap = self._st.max_shard_bytes + TRAILER_BYTES  # aiohttp answers 413 past it
        req = parse_lean_head(bytes(self._head[:end]), cap) if end <= HEAD_MAX else None
        if req is not None and req.method == "GET":  # no body: served at once
            start = end + 4
            rest = self._head[start:self._have]
            self._head[:len(rest)] = rest
            self._have = len(rest)
            self._req, self._body, self._got = req, bytearray(), 0
            self._start()
            return
        if req is not None:  # signature checked here once; `lean_put` rechecks the rest
            req.vouched = self._st.verifier.vouch("PUT", req.target, req.headers)
        big = req is not None and req.length > LEAN_MAX_BODY
        if req is None or req.vouched is None or not (
                take_stream() if big else BODY_BUDGET.take(req.length)):
            # not ours, a signature aiohttp refuses before reading the body, or too many
            # bodies buffered or streamed at once: aiohttp's
            self._hand_off()
            return
        start = end + 4
        if big:  # streamed into aligned buffers as it arrives (nodes.leanstream)
            self._stream = BodyStream(req.length, self._pause_reads, KEEPALIVE_S)
            self._req = req
            take = min(self._have - start, req.length)
            self._stream.feed(self._head[start:start + take])
            rest = self._head[start + take:self._have]
            self._head[:len(rest)] = rest
            self._have = len(rest)
            self._start()
            return
        take = min(self._have - start, req.length)
        self._body = bytearray(req.length)
        self._body[:take] = self._head[start:start + take]
        rest = self._head[start + take:self._have]
        self._head[:len(rest)] = rest
        self._have = len(rest)
        self._req, self._got = req, take
        if take == req.length:
            self._start()
        else:
            self._arm_idle()  # from here on, cut only if the body stops arriving

    def _start(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        req, body = self._req, self._stream or self._body
        assert req is not None
        self.busy = asyncio.get_running_loop().create_task(self._serve(req, body))

    async def _serve(self, req: LeanRequest, body: bytearray | BodyStream) -> None:
        st = self._st
        start = time.perf_counter()
        stats = RequestStats(request_id=request_id_of(req.headers))
        stats.extra["front"] = "lean"
        status = 500
        try:
            try:
                if req.method == "GET":  # answered there: cut short, the connection goes
                    whole = await lean_get(st, stats, req.path, req.target, req.headers,
                                           req.count, _date(), req.close, self._live)
                    status = 200
                    if not whole or req.close:
                        self._drop()
                    doc = None
                elif isinstance(body, BodyStream):
                    doc = await stream_put(st, stats, req, body)
                    status = 201
                else:
                    doc = await lean_put(st, stats, req, body)
                    status = 201
            except ApiError as exc:
                status, doc = exc.status, {"error": exc.code, "message": exc.message}
            except asyncio.CancelledError:
                status = 499
                raise
            except Exception as exc:  # noqa: BLE001 - answered as aiohttp's front answers
                st.log.error("unhandled error", request_id=stats.request_id,
                             error=type(exc).__name__)
                status, doc = 500, {"error": "internal", "message": "internal error"}
            if doc is not None:  # a body refused part-way leaves the connection unusable
                cut = isinstance(body, BodyStream) and body.got < body.length
                self._answer(status, doc, stats.request_id, req.close or cut)
        finally:
            record_request(st, stats, req.method, req.path, req.query, req.method.lower(),
                           status, time.perf_counter() - start)
            self._give_body()
            self._req, self._body, self._got, self.busy = None, bytearray(), 0, None
        if self._closing:
            return
        if self._write_paused:  # resume_writing goes on; a peer that never reads is cut
            self._arm_idle()
            return
        self._go_on()

    def _go_on(self) -> None:
        """After an answer: serve what was received meanwhile, then read on."""
        self._arm_idle()
        if self._have:
            self._next()
        t = self.transport
        if not self._closing and t is not None and self._have < len(self._head):
            t.resume_reading()  # a no-op unless paused (the head buffer had filled)

    def _live(self) -> asyncio.WriteTransport | None:
        """The connection's transport, None once it is lost or closing."""
        t = self.transport
        return None if self._closing or t is None or t.is_closing() else t

    def _drop(self) -> None:
        """Close the connection after what was written (a short body says it was cut)."""
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def _give_body(self) -> None:
        if self._stream is not None:
            self._stream.close()  # its buffers back to the pool
            self._stream = None
            give_stream()
        elif self._req is not None:
            BODY_BUDGET.give(self._req.length)

    def _pause_reads(self, pause: bool) -> None:
        """A streamed body's flow control: its buffers are all taken, or one came back."""
        t = self.transport
        if t is None or t.is_closing():
            return
        if pause:
            t.pause_reading()
        else:
            t.resume_reading()

    def _answer(self, status: int, doc: dict[str, Any], request_id: str, close: bool) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        body = json.dumps(doc).encode()
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                "Content-Type: application/json; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n{REQUEST_ID_HEADER}: {request_id}\r\n"
                f"Date: {_date()}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n")
        t.write(head.encode("latin-1") + body)
        if close:
            self._closing = True
            t.close()

    def _hand_off(self) -> None:
        """Give the connection, and every byte received on it so far, to aiohttp."""
        t = self.transport
        assert t is not None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._conns.discard(self)
        self._closing = True
        handler = capped_handler(self._server, HANDED_HEAD_TIMEOUT_S, HEAD_MAX_BYTES,
                                 _head_too_large)
        t.set_protocol(handler)
        handler.connection_made(t)
        data = bytes(self._head[:self._have])
        self._have = 0
        t.resume_reading()  # reading may have paused on a full head buffer; resumed before
        if data:  # aiohttp sees the bytes: a pause it makes there (its queue of pipelined
            handler.data_received(data)  # requests is full) must hold, or it never pauses again

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle_got = self._got if self._req is not None else -1
        self._idle = asyncio.get_running_loop().call_later(KEEPALIVE_S, self._idle_close)

    def _idle_close(self) -> None:
        self._idle = None
        if self.busy is not None or self.transport is None:
            return
        if self._req is not None and self._got != self._idle_got:
            self._arm_idle()  # a body still arriving, however slowly, is not idle
            return
        self.transport.close()

    def close_idle(self) -> None:
        """Close the connection unless a request is being served (at shutdown)."""
        if self.busy is None and self.transport is not None:
            self.transport.close()


class LeanListener:
    """The node's listening socket with `LeanFront` in front of aiohttp's `runner.server`."""

    def __init__(self, st: NodeState, runner: web.AppRunner) -> None:
        assert runner.server is not None, "runner.setup() first"
        self._st = st
        self._web = runner.server
        self.conns: set[LeanFront] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: LeanFront(self._st, self._web, self.conns), host, port,
            reuse_address=True)
        return self._server.sockets[0].getsockname()[:2]

    async def stop(self, timeout_s: float) -> None:
        """Stop accepting, close idle lean connections, let requests in flight finish
        (and close their connections once they are idle too)."""
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            for c in list(self.conns):
                c.close_idle()
            busy = [c.busy for c in self.conns if c.busy is not None]
            left = deadline - loop.time()
            if not busy or left <= 0:
                return
            await asyncio.wait(busy, timeout=left)
