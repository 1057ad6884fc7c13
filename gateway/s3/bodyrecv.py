"""Large request bodies received straight into pooled blocks, past aiohttp's body parser.

Through aiohttp each received piece of a body is copied twice before our code sees it: the
socket's `recv` into a new `bytes`, then the HTTP parser's slice of it into another one fed
to the request's StreamReader (with the page faults of ~two fresh megabytes per megabyte).
Once the head is parsed and the handler reads a large body (`DIRECT_BODY_BYTES` or more,
announced by Content-Length, on a plain socket), `DirectBody` takes the connection's reading
over: the transport `recv_into`s 1 MiB `Lent` blocks from `POOL`, and each full block is
handed on as it is (the segment cutter and digests hold it like `bytes`; the pool refills it
only once nothing refers to it). Exactly the announced bytes are read, never one more.

aiohttp's parser, which saw the head and the body's start only, still expects the rest: once
exactly the announced bytes are in, the connection gets a fresh parser (`_fresh_parser`, built
as aiohttp builds its own) before aiohttp reads from it again, so the connection is kept
alive and a request sent right behind the body is parsed as one. A body not wholly received
(given up, cut, timed out) ends the connection: the answer carries `Connection: close`
(`take_connection`, from `server.py`) and anything the client sends meanwhile is dropped.
A body the handler gives up on (a bad chunk or digest, a storage error) is read on and
dropped (at most DRAIN_BYTES, for DRAIN_S, as aiohttp lingers) before aiohttp gets the
connection back and closes it: closing on unread bytes would reset the connection under
the answer of a client still sending. A client silent for the idle limit (no byte at all,
however slowly it sends) gets RequestTimeout; one that goes away mid-body is seen as at
any read (ConnectionResetError); the handler's other protocol callbacks (write flow
control, connection loss) reach aiohttp.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http import HttpRequestParser

from gateway.s3.request_keys import BODY_TAKEN
from storage.buffers import IdleTrim, LendingPool, Lent

BLOCK_BYTES = 1024 * 1024  # one pooled receive block
DIRECT_BODY_BYTES = 4 * 1024 * 1024  # bodies from this size on are received directly
READY_BLOCKS = 2  # full blocks waiting for the handler before reading pauses
POOL = LendingPool(BLOCK_BYTES, keep=32)  # the process's (two 64 MiB PUTs' worth, about);
# blocks past `keep` are freed as used, and the kept ones once no body came for a while:
IDLE_TRIM_S = 2.0
DRAIN_S = 10.0  # an abandoned body is read and dropped this long at most (aiohttp's linger)
DRAIN_BYTES = 128 * 1024 * 1024  # ... and only if no more than this is left of it
_SCRATCH = memoryview(bytearray(256 * 1024))  # where dropped bytes land (one loop's, shared)


QUIET = IdleTrim(POOL.trim, IDLE_TRIM_S)  # the process's (one event loop)


def direct_transport(request: web.BaseRequest, wire_length: int | None) -> Any:
    """The request's transport if its body can be received directly (a plain selector
    socket, an announced length of at least DIRECT_BODY_BYTES, no transfer coding), else
    None: aiohttp reads it as before."""
    if wire_length is None or wire_length < DIRECT_BODY_BYTES:
        return None
    if "Transfer-Encoding" in request.headers:
        return None
    return _plain_transport(request)


def _plain_transport(request: web.BaseRequest) -> Any:
    """The request's transport if it is a plain selector socket that is still open."""
    t = request.transport
    if t is None or t.is_closing() or not isinstance(getattr(t, "max_size", None), int):
        return None  # TLS, another event loop's transport, or gone
    if t.get_extra_info("ssl_object") is not None:
        return None
    return t


def take_connection(request: web.BaseRequest) -> None:
    """The connection ends after this request's answer: its body was not wholly received,
    so its parser is past the body's start only (`server.py` marks the answer
    `Connection: close`)."""
    proto = request.protocol
    if proto is not None:
        proto.close()  # no further request is read; closed once the answer is out
    # aiohttp lingers (reads on) until the body's end, fed by `DirectBody` once it is read


def drop_rest(request: web.BaseRequest, transport: Any) -> DirectBody | None:
    """The handler gave up on a body aiohttp was still receiving (an error in what aiohttp
    had buffered before the rest could be taken directly): the rest is read and dropped
    within DRAIN_S and DRAIN_BYTES as a direct body's is, not for aiohttp's own linger
    (10 s, however many bytes come). The connection closes after the answer. Returns the
    `DirectBody` dropping it (None: nothing left to drop)."""
    left = (request.content_length or 0) - request.content.total_bytes
    if left <= 0 or transport.is_closing():
        return None
    take_connection(request)
    dropping = DirectBody(transport, transport.get_protocol(), left, request.content)
    dropping.drop()
    return dropping


def cut_stalled(request: web.BaseRequest) -> None:
    """The handler gave up on a body whose client was too slow (a deadline passed): nothing
    more of it is read or waited for, not even DRAIN_S's drop; the connection closes as
    soon as the answer is out."""
    take_connection(request)
    direct = request.get(BODY_TAKEN)
    if direct is not None:
        direct.cut()
    if not request.content.is_eof():
        request.content.feed_eof()  # aiohttp's lingering read ends at once


def drop_chunked(request: web.BaseRequest) -> DirectBody | None:
    """The handler gave up on a body sent with chunked transfer encoding (no length): the
    rest is read and dropped like a given-up Content-Length body's, within DRAIN_S and
    DRAIN_BYTES (its end is unknown: whichever comes first, or the client closing), not for
    aiohttp's own linger (10 s, however many bytes come). The connection closes after the
    answer. Returns the `DirectBody` dropping it (None: not a plain socket, aiohttp's)."""
    t = _plain_transport(request)
    if t is None:
        return None
    take_connection(request)
    dropping = DirectBody(t, t.get_protocol(), DRAIN_BYTES, request.content)
    dropping.drop()
    return dropping


def _fresh_parser(proto: Any) -> bool:
    """Give aiohttp's connection handler `proto` a new request parser, made with the
    arguments aiohttp's `RequestHandler.__init__` makes its own with (its limits, its
    server's `auto_decompress`): the old one, fed the head and the body's start only,
    would take the next request for body bytes. False if this aiohttp's handler lacks
    what that takes (the connection then closes after the answer)."""
    try:
        kwargs = proto._manager._kwargs
        parser = HttpRequestParser(
            proto, proto._loop, proto._read_bufsize, max_line_size=proto.max_line_size,
            max_field_size=proto.max_field_size, max_headers=proto.max_headers,
            payload_exception=web_protocol.RequestPayloadError,
            auto_decompress=kwargs.get("auto_decompress", True),
            max_msg_queue_size=web_protocol.MAX_MSG_QUEUE_SIZE)
    except (AttributeError, TypeError):
        return False
    proto._parser = parser
    return True


class DirectBody(asyncio.BufferedProtocol):
    """The rest of one body (`left` bytes), received into pooled blocks; `blocks()` yields
    them in order (a full block as its `Lent`, the short last one as `bytes`). `content`,
    the request's stream, gets its EOF when the connection goes back to aiohttp;
    `reusable` says whether it went back whole (every body byte received, a fresh parser)
    and may carry the next request."""

    def __init__(self, transport: Any, inner: Any, left: int, content: Any) -> None:
        self._t = transport
        self._inner = inner  # aiohttp's protocol: gets the connection back at the end
        self._content = content
        self._left = left
        self._block: Lent | None = None
        self._got = 0
        self._ready: deque[tuple[Lent, int]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._paused = False
        self._draining: asyncio.TimerHandle | None = None  # set while dropping the rest
        self._last = 0.0  # loop time of the last bytes received (the idle limit's start)
        self._given_up = False  # the handler stopped reading before the body's end
        self.installed = False
        self.reusable = False

    def install(self) -> None:
        """Take the transport's reading over (the caller drained aiohttp's buffer first)."""
        self.installed = True
        QUIET.begin()
        self._last = asyncio.get_running_loop().time()
        self._t.set_protocol(self)
        if self._left:
            self._t.resume_reading()
        else:
            self._restore()

    def drop(self) -> None:
        """Take the transport's reading over only to drop the body (`drop_rest`)."""
        self.install()
        self._abandon(False)
        QUIET.end()

    def cut(self) -> None:
        """Stop reading (or dropping) the body now, as for a client that stalled."""
        self._abandon(True)

    def _restore(self) -> None:
        """The body is read (or given up): aiohttp gets the connection back, and its
        stream its EOF (its lingering read ends). Read whole for the handler, the
        connection parses on with a fresh parser; else aiohttp closes it after the answer
        and drops what comes meanwhile."""
        if self._draining is not None:
            self._draining.cancel()
            self._draining = None
        if self.installed:
            self.installed = False
            if not self._t.is_closing():
                if not self._left and not self._given_up and _fresh_parser(self._inner):
                    self.reusable = True
                else:
                    self._inner.close()
                self._t.set_protocol(self._inner)
                self._t.resume_reading()
        if not self._content.is_eof():
            self._content.feed_eof()

    def _abandon(self, timed_out: bool) -> None:
        """The handler stopped reading: its blocks go back to the pool, and the rest of the
        body is read and dropped (within DRAIN_S and DRAIN_BYTES), unless the client stalled
        or went away (nothing to wait for). The connection then ends after the answer."""
        self._ready.clear()
        self._block = None
        if self._left:
            self._given_up = True
            self._inner.close()
        if (not self.installed or timed_out or self._error is not None
                or self._left > DRAIN_BYTES):
            self._restore()
            return
        self._draining = asyncio.get_running_loop().call_later(DRAIN_S, self._restore)
        if self._paused:
            self._paused = False
            self._t.resume_reading()

    # -- asyncio.BufferedProtocol ----------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._draining is not None:
            return _SCRATCH[:min(len(_SCRATCH), self._left)]
        if self._block is None:
            self._block, self._got = POOL.take(), 0
        end = min(len(self._block), self._got + self._left)
        return memoryview(self._block)[self._got:end]

    def buffer_updated(self, nbytes: int) -> None:
        self._left -= nbytes
        if self._draining is not None:
            if not self._left:
                self._restore()
            return
        self._last = asyncio.get_running_loop().time()  # the idle limit counts from here
        self._got += nbytes
        assert self._block is not None
        if self._got == len(self._block) or not self._left:
            self._ready.append((self._block, self._got))
            self._block = None
            if not self._left:
                self._restore()
            elif len(self._ready) >= READY_BLOCKS:
                self._paused = True
                self._t.pause_reading()
            self._wake()

    def eof_received(self) -> bool:
        self._fail(ConnectionResetError("the client closed its side mid-body"))
        if self._draining is not None:
            self._restore()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionResetError("Connection lost"))
        self.installed = False
        self._restore()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- the handler's side ----------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self, idle_s: float) -> None:
        """Until a block is ready (or an error); TimeoutError once no byte at all came for
        `idle_s` (a slow but steady client fills a block in many reads)."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        try:
            while True:
                left = self._last + idle_s - loop.time()
                if left <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait((waiter,), timeout=left)
                if done:
                    return
        finally:
            self._waiter = None

    async def blocks(self, idle_s: float) -> AsyncIterator[Lent | bytes]:
        """The body's blocks as they fill; TimeoutError after `idle_s` without a byte.
        Close it (`aclosing`) when done: an abandoned body is then dropped at once."""
        timed_out = False
        try:
            while True:
                if self._ready:
                    block, n = self._ready.popleft()
                    if self._paused and len(self._ready) < READY_BLOCKS:
                        self._paused = False
                        self._last = asyncio.get_running_loop().time()  # paused: not idle
                        self._t.resume_reading()
                    yield block if n == len(block) else bytes(memoryview(block)[:n])
                    continue
                if self._error is not None:
                    raise self._error
                if not self._left:
                    return
                try:
                    await self._wait(idle_s)
                except TimeoutError:
                    timed_out = True
                    raise
        finally:
            self._abandon(timed_out)
            QUIET.end()
