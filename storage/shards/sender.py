"""Whole-shard PUTs over a lean HTTP/1.1 client: the write side of `storage.shards.fetch`.

A shard PUT through a general HTTP client costs the gateway about as much CPU as the node
spends storing a 256 KiB shard (request and response objects, header multidicts, timers,
payload writers, a body task). A one-segment object (up to `segment_size`, 1 MiB by default)
is six such requests, so its shards, whole in memory once encoded, go out here instead: one
`writelines` of the request head, the shard file and its body MAC trailer, then the answer's
head and small JSON body parsed from the bytes received. Same request on the wire as
`NodeClient.put_shard` sends (signed headers, `Content-Length`, trailer MAC), so nodes see
no difference.

Keep-alive connections are pooled per node; a reused connection the node closed before
answering anything is replaced by a new one, once, with a freshly signed request (the node
never accepted the first: a replay of its nonce would be refused).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress

from storage.config import NodeSpec
from storage.shards.fetch import FetchError

HEAD_BYTES = 8192  # response status line + headers, at most
MAX_ANSWER_BYTES = 64 * 1024  # a PUT's JSON answer (or error) is far smaller
IDLE_S = 20.0  # idle connections older than this are closed, not reused (nodes keep 75 s)
MAX_IDLE = 16  # idle connections kept per node

Request = Callable[[], list[bytes]]  # builds the request's pieces (head, body, trailer)


class _Conn(asyncio.Protocol):
    """One keep-alive connection; carries one request and its answer at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.keep_alive = True
        self.finished = False
        self.error: FetchError | None = None
        self.got_any = False
        self._buf = bytearray()
        self._body_at = -1
        self._length = 0
        self._waiter: asyncio.Future[None] | None = None

    @property
    def answer(self) -> bytes:
        return bytes(self._buf[self._body_at:self._body_at + self._length])

    def send(self, pieces: list[bytes]) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.writelines(pieces)

    async def wait(self, timeout_s: float) -> None:
        """Until the whole answer arrived or the connection failed."""
        if self.finished or self.error is not None:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_any = True
        if self.finished:
            self._fail(FetchError("?", "bytes nobody asked for"))
            return
        self._buf += data
        try:
            self._parse()
        except FetchError as exc:
            self._fail(exc)
            return
        if self.finished:
            self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.finished and self.error is None:
            self.error = FetchError("?", f"connection closed: {exc or 'EOF'}",
                                    fresh=not self.got_any)
        self._wake()

    # -- internals -------------------------------------------------------------------------

    def _parse(self) -> None:
        if self._body_at < 0:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) >= HEAD_BYTES:
                    raise FetchError("?", "response head too large")
                return
            lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise FetchError("?", f"bad status line {lines[0][:80]!r}")
            length = None
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name, value = name.strip().lower(), value.strip()
                if name == "content-length" and value.isdigit():
                    length = int(value)
                elif name == "connection" and value.lower() == "close":
                    self.keep_alive = False
                elif name == "transfer-encoding":
                    raise FetchError("?", "answer without a Content-Length")
            if length is None or length > MAX_ANSWER_BYTES:
                raise FetchError("?", "answer without a usable Content-Length")
            self.status, self._length, self._body_at = int(parts[1]), length, end + 4
        have = len(self._buf) - self._body_at
        if have > self._length:
            raise FetchError("?", "more bytes than the Content-Length")
        self.finished = have == self._length

    def _fail(self, exc: FetchError) -> None:
        self.error = exc
        self.keep_alive = False
        self.close()
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)


class ShardSender:
    """Whole-body requests to nodes over pooled keep-alive connections."""

    def __init__(self, read_timeout_s: float = 15.0, connect_timeout_s: float = 3.0) -> None:
        self._read_timeout = read_timeout_s
        self._connect_timeout = connect_timeout_s
        self._idle: dict[str, list[_Conn]] = {}

    async def request(self, node: NodeSpec, build: Request) -> tuple[int, bytes]:
        """Send the request `build()` makes; (status, answer body). FetchError when the
        node cannot be reached, answers badly, or is silent for the read timeout."""
        for attempt in range(2):
            conn, reused = await self._acquire(node)
            done = False
            try:
                conn.send(build())
                try:
                    await conn.wait(self._read_timeout)
                except TimeoutError:
                    raise FetchError(node.id, f"no answer for {self._read_timeout:.0f}s") \
                        from None
                if conn.error is not None:
                    err = conn.error
                    if reused and err.fresh and attempt == 0:
                        continue
                    raise FetchError(node.id, err.reason, err.status, err.fresh) from None
                done = True
                status, answer = conn.status, conn.answer
                self._release(node, conn)
                return status, answer
            finally:
                if not done:
                    conn.close()
        raise AssertionError("unreachable")

    async def _acquire(self, node: NodeSpec) -> tuple[_Conn, bool]:
        idle = self._idle.get(node.address, [])
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S:
                return conn, True
            conn.close()
        host, _, port = node.address.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(_Conn, host, int(port))
        except (OSError, TimeoutError) as exc:
            raise FetchError(node.id, f"{type(exc).__name__}: {exc}") from None
        return conn, False

    def _release(self, node: NodeSpec, conn: _Conn) -> None:
        idle = self._idle.setdefault(node.address, [])
        if conn.closed or not conn.keep_alive or len(idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def close(self) -> None:
        """Close every idle connection."""
        for conns in self._idle.values():
            for conn in conns:
                with suppress(Exception):
                    conn.close()
        self._idle.clear()
