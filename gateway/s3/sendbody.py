"""Writing a GET body whose chunks are borrowed: views of buffers the read path reuses.

A borrowed chunk must have left the process before the next one is asked for. Chunks are
written in slices of at most a MiB. A slice goes to the socket with one `writev` of the
borrowed view itself (the first one with the response head aiohttp holds back, which
aiohttp would otherwise join with that slice into a new object: a copy of up to a MiB per
GET), so the kernel's copy is the only one. What the socket does not take goes through the
connection's transport, which is told to count any unsent byte as "too much" (write-buffer
high water 0), so aiohttp's drain returns only once the transport holds nothing. A slice
too small for aiohttp to drain after is copied first (it is small). Anything unusual (a
transport holding bytes, a compressing or chunked writer, an aiohttp that writes its head
at once, an error from the socket) takes aiohttp's own write for that slice, and a TLS
connection takes it for every slice.

A client that takes no byte of the answer for `SEND_IDLE_S` (a TCP window left at zero) is
cut: each such connection kept the read path's buffers, ~5-10 MB, for as long as it liked
(40 of them took a gateway worker from 90 to 494 MB), as `body.BODY_IDLE_TIMEOUT_S` cuts
an upload whose bytes stop coming.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import sys
import termios
from collections.abc import Awaitable
from types import TracebackType

from aiohttp import web

SLICE_BYTES = 1024 * 1024
DRAIN_ABOVE = 0x10000  # aiohttp's StreamWriter drains after a write larger than this
# asyncio's socket transport copies what the socket did not take on 3.11 (a bytearray
# buffer); from 3.12 it queues the caller's object itself, views included.
TRANSPORT_COPIES = sys.version_info < (3, 12)
SEND_IDLE_S = 20.0  # the longest a client may take no byte of the answer (as an upload's idle)


def _unacked(transport: asyncio.BaseTransport) -> int:
    """Bytes in the kernel's send queue the client has not acknowledged (SIOCOUTQ): they
    fall as the client takes bytes, while the transport's own buffer only shrinks once the
    kernel's (autotuned to MiBs) is a third free, which a steady slow reader can take far
    longer than SEND_IDLE_S to make (64 KB/s was reset)."""
    info = getattr(transport, "get_extra_info", None)
    sock = info("socket") if info is not None else None
    if sock is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except OSError:
        return 0


def _pending(transport: asyncio.BaseTransport) -> int:
    """Bytes of the answer the client has not taken: the transport's, and those in the
    kernel's send queue not yet acknowledged."""
    size = getattr(transport, "get_write_buffer_size", None)
    return (size() if size is not None else 0) + _unacked(transport)


def _reset(transport: asyncio.BaseTransport) -> None:
    """Drop the connection and what it holds: a reset, as a FIN would wait behind the unsent
    bytes, and the kernel would keep them (and the connection) for minutes more."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class HeldHeadResponse(web.StreamResponse):
    """A streamed response whose status line and headers wait for the first body write,
    to leave with its first bytes: one `send` where there were two (and, on loopback, one
    wake-up of the reader fewer). `BorrowedBodyWriter` sends both with one `writev`;
    aiohttp's own write (its fallback) joins them into one buffer."""

    _send_headers_immediately = False


class BorrowedBodyWriter:
    """`async with BorrowedBodyWriter(request, resp) as w: await w.write(chunk)`."""

    def __init__(self, request: web.BaseRequest, resp: web.StreamResponse) -> None:
        self._request = request
        self._resp = resp
        self._limits: tuple[int, int] | None = None
        self._fd = -1  # the connection's socket, for writev (-1: aiohttp's writes only)

    async def __aenter__(self) -> BorrowedBodyWriter:
        transport = self._request.transport
        if transport is not None:
            self._limits = transport.get_write_buffer_limits()
            transport.set_write_buffer_limits(high=0)
            sock = transport.get_extra_info("socket")
            if sock is not None and transport.get_extra_info("ssl_object") is None:
                self._fd = sock.fileno()  # (under TLS the socket carries records, not bytes)
        return self

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        view = memoryview(chunk).cast("B")
        for at in range(0, len(view), SLICE_BYTES):
            piece: bytes | memoryview = view[at:at + SLICE_BYTES]
            rest = self._send(piece)
            if rest is None:  # aiohttp's own write
                if len(piece) <= DRAIN_ABOVE or not TRANSPORT_COPIES:
                    piece = bytes(piece)  # no drain follows it, or the transport keeps views
                await self._while_taken(self._resp.write(piece), None)
            elif rest:
                await self._hand_over(rest)

    def _send(self, piece: memoryview) -> list[bytes | memoryview] | None:
        """`piece` (after the held-back head, if any) written to the socket: what the
        socket did not take ([] for nothing), or None when aiohttp should write it."""
        writer = self._request.writer
        transport = self._request.transport
        head = getattr(writer, "_headers_buf", None)
        if (self._fd < 0 or transport is None or transport.is_closing()
                or transport.get_write_buffer_size()
                or getattr(writer, "_compress", True) is not None
                or getattr(writer, "chunked", True)
                or getattr(writer, "on_body_write", None) is not None
                or getattr(writer, "_on_chunk_sent", None) is not None
                or getattr(writer, "length", None) is None or writer.length < len(piece)
                or (head is not None and getattr(writer, "_headers_written", True))):
            return None
        parts: list[bytes | memoryview] = [head, piece] if head else [piece]
        try:
            sent = os.writev(self._fd, parts)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return None  # aiohttp's write meets the same error and handles it as its own
        if head is not None:  # the head is ours now: aiohttp must not send it again
            writer._headers_buf = None  # type: ignore[attr-defined]
            writer._headers_written = True  # type: ignore[attr-defined]
        writer.length -= len(piece)
        writer.output_size += sum(len(p) for p in parts)
        rest: list[bytes | memoryview] = []
        for p in parts:
            if sent >= len(p):
                sent -= len(p)
                continue
            rest.append(p[sent:])
            sent = 0
        return rest

    async def _hand_over(self, rest: list[bytes | memoryview]) -> None:
        """The bytes the socket did not take, to the transport, and the wait until it has
        sent them all. They are copies: an early exit (a cancelled drain) must never leave
        a view of a reused buffer queued on the socket, where the next request's plaintext
        would be sent in its place (`TRANSPORT_COPIES`)."""
        transport = self._request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        for p in rest:
            transport.write(p if TRANSPORT_COPIES else bytes(p))
        await self._while_taken(self._request.writer.drain(), transport.get_write_buffer_size())

    async def _while_taken(self, sending: Awaitable[None], held: int | None) -> None:
        """Await `sending` (a write's wait for the transport to empty) while the client takes
        bytes: after SEND_IDLE_S in which the bytes not yet taken (the transport's and the
        kernel's unacknowledged ones, `_pending`) did not fall, the connection is reset (its
        buffers dropped) and the wait ends in ConnectionError. `held`: None when `sending`
        writes them itself (its first SEND_IDLE_S only takes the measure). A timer, never a
        cancellation: a cancelled aiohttp drain leaves its waiter cancelled, and every later
        drain of the connection raises CancelledError at once (the answer was cut)."""
        transport = self._request.transport
        if transport is None:
            await sending
            return
        loop = asyncio.get_running_loop()
        last = None if held is None else _pending(transport)
        timer: asyncio.TimerHandle | None = None

        def check() -> None:
            nonlocal last, timer
            now = _pending(transport)
            if last is not None and now >= last:
                _reset(transport)  # the drain's waiter gets "Connection lost"
                return
            last = now
            timer = loop.call_later(SEND_IDLE_S, check)

        timer = loop.call_later(SEND_IDLE_S, check)
        try:
            await sending
        finally:
            timer.cancel()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        transport = self._request.transport
        if self._limits is not None and transport is not None and not transport.is_closing():
            low, high = self._limits
            transport.set_write_buffer_limits(high=high, low=low)
