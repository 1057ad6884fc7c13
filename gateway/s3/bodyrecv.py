"""Large request bodies received straight into pooled blocks, past aiohttp's body parser.

Through aiohttp each received piece of a body is copied twice before our code sees it: the
socket's `recv` into a new `bytes`, then the HTTP parser's slice of it into another one fed
to the request's StreamReader (with the page faults of ~two fresh megabytes per megabyte).
Once the head is parsed and the handler reads a large body (`DIRECT_BODY_BYTES` or more,
announced by Content-Length, on a plain socket), `DirectBody` takes the connection's reading
over: the transport `recv_into`s 1 MiB `Lent` blocks from `POOL`, and each full block is
handed on as it is (the segment cutter and digests hold it like `bytes`; the pool refills it
only once nothing refers to it). Exactly the announced bytes are read, never one more.

aiohttp's parser still believes the body is pending, so the connection is not reused: the
answer carries `Connection: close` and the connection closes after it (`take_connection`);
anything the client sends past the body is read and dropped meanwhile.
A client that goes away mid-body is seen as at any read (ConnectionResetError); the
handler's other protocol callbacks (write flow control, connection loss) reach aiohttp.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from storage.buffers import LendingPool, Lent

BLOCK_BYTES = 1024 * 1024  # one pooled receive block
DIRECT_BODY_BYTES = 4 * 1024 * 1024  # bodies from this size on are received directly
READY_BLOCKS = 2  # full blocks waiting for the handler before reading pauses
POOL = LendingPool(BLOCK_BYTES, keep=32)  # the process's (two 64 MiB PUTs' worth, about);
# blocks past `keep` are freed as used, and the kept ones once no body came for a while:
IDLE_TRIM_S = 2.0


class _Quiet:
    """Counts the bodies being received; `POOL.trim()` once none was for IDLE_TRIM_S."""

    def __init__(self) -> None:
        self.active = 0
        self._handle: asyncio.TimerHandle | None = None

    def begin(self) -> None:
        self.active += 1

    def end(self) -> None:
        self.active -= 1
        if not self.active and self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(IDLE_TRIM_S, self._trim)

    def _trim(self) -> None:
        self._handle = None
        if not self.active:
            POOL.trim()


QUIET = _Quiet()  # the process's (one event loop)


def direct_transport(request: web.BaseRequest, wire_length: int | None) -> Any:
    """The request's transport if its body can be received directly (a plain selector
    socket, an announced length of at least DIRECT_BODY_BYTES, no transfer coding), else
    None: aiohttp reads it as before."""
    if wire_length is None or wire_length < DIRECT_BODY_BYTES:
        return None
    if "Transfer-Encoding" in request.headers:
        return None
    t = request.transport
    if t is None or t.is_closing() or not isinstance(getattr(t, "max_size", None), int):
        return None  # TLS, another event loop's transport, or gone
    if t.get_extra_info("ssl_object") is not None:
        return None
    return t


def take_connection(request: web.BaseRequest) -> None:
    """The connection ends after this request's answer: its parser is past the body's
    start only (`server.py` marks the answer `Connection: close`)."""
    proto = request.protocol
    if proto is not None:
        proto.close()  # no further request is read; closed once the answer is out
    request.content.feed_eof()  # nothing for aiohttp's lingering read to wait for


class DirectBody(asyncio.BufferedProtocol):
    """The rest of one body (`left` bytes), received into pooled blocks; `blocks()` yields
    them in order (a full block as its `Lent`, the short last one as `bytes`)."""

    def __init__(self, transport: Any, inner: Any, left: int) -> None:
        self._t = transport
        self._inner = inner  # aiohttp's protocol: gets the connection back at the end
        self._left = left
        self._block: Lent | None = None
        self._got = 0
        self._ready: deque[tuple[Lent, int]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._paused = False
        self.installed = False

    def install(self) -> None:
        """Take the transport's reading over (the caller drained aiohttp's buffer first)."""
        self.installed = True
        QUIET.begin()
        self._t.set_protocol(self)
        if self._left:
            self._t.resume_reading()
        else:
            self._restore()

    def _restore(self) -> None:
        """The body is whole (or abandoned): aiohttp gets the connection back, and reads on.
        Its handler no longer parses (`take_connection`): what else arrives (bytes past the
        body, the rest of an abandoned one) is read and dropped, so closing after the answer
        finds nothing unread (which would reset the connection under the answer)."""
        if self.installed:
            self.installed = False
            self._t.set_protocol(self._inner)
            self._t.resume_reading()

    # -- asyncio.BufferedProtocol ----------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._block is None:
            self._block, self._got = POOL.take(), 0
        end = min(len(self._block), self._got + self._left)
        return memoryview(self._block)[self._got:end]

    def buffer_updated(self, nbytes: int) -> None:
        self._got += nbytes
        self._left -= nbytes
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
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionResetError("Connection lost"))
        self.installed = False
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

    async def blocks(self, idle_s: float) -> AsyncIterator[Lent | bytes]:
        """The body's blocks as they fill; TimeoutError after `idle_s` without one."""
        try:
            while True:
                if self._ready:
                    block, n = self._ready.popleft()
                    if self._paused and len(self._ready) < READY_BLOCKS:
                        self._paused = False
                        self._t.resume_reading()
                    yield block if n == len(block) else bytes(memoryview(block)[:n])
                    continue
                if self._error is not None:
                    raise self._error
                if not self._left:
                    return
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    async with asyncio.timeout(idle_s):
                        await self._waiter
                finally:
                    self._waiter = None
        finally:
            self._restore()  # an abandoned body: the rest is read and dropped (see _restore)
            QUIET.end()
