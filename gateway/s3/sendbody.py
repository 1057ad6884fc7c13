"""Writing a GET body whose chunks are borrowed: views of buffers the read path reuses.

A borrowed chunk must have left the process before the next one is asked for. The
connection's transport is told to count any unsent byte as "too much" (write-buffer high
water 0), so aiohttp's drain after each large write returns only once the transport holds
nothing: the bytes are in the kernel, sent from our buffer with no copy of ours. Chunks are
written in slices of at most a MiB so that each send starts on an empty transport; a slice
too small for aiohttp to drain after is copied first (it is small).
"""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

SLICE_BYTES = 1024 * 1024
DRAIN_ABOVE = 0x10000  # aiohttp's StreamWriter drains after a write larger than this


class BorrowedBodyWriter:
    """`async with BorrowedBodyWriter(request, resp) as w: await w.write(chunk)`."""

    def __init__(self, request: web.BaseRequest, resp: web.StreamResponse) -> None:
        self._request = request
        self._resp = resp
        self._limits: tuple[int, int] | None = None

    async def __aenter__(self) -> BorrowedBodyWriter:
        transport = self._request.transport
        if transport is not None:
            self._limits = transport.get_write_buffer_limits()
            transport.set_write_buffer_limits(high=0)
        return self

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        view = memoryview(chunk).cast("B")
        for at in range(0, len(view), SLICE_BYTES):
            piece: bytes | memoryview = view[at:at + SLICE_BYTES]
            if len(piece) <= DRAIN_ABOVE:
                piece = bytes(piece)  # no drain follows it: the transport may keep it
            await self._resp.write(piece)

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        transport = self._request.transport
        if self._limits is not None and transport is not None and not transport.is_closing():
            low, high = self._limits
            transport.set_write_buffer_limits(high=high, low=low)
