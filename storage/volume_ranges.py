"""Byte ranges over a volume's extents: reads, read-modify-writes of partial extents and
hole punching, each in extent steps through the handle's extent I/O (no cache; the block
driver adds one). A mixin of `VolumeHandle` (storage/volume_io.py), kept apart so the handle
holds the lease and the extent commits alone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage.errors import InvalidInput
from storage.volume_records import Volume


class ByteRanges:
    """`read`, `write` and `trim` at any offset, on the extent operations of the class
    that mixes it in."""

    vol: Volume

    if TYPE_CHECKING:  # the handle's own extent operations these use
        async def read_extent(self, idx: int) -> bytes | None: ...
        async def write_extent(self, idx: int, data: bytes, jseq: int = 0) -> None: ...
        async def trim_extent(self, idx: int, jseq: int = 0) -> None: ...
        def extent_len(self, idx: int) -> int: ...
        def holds_data(self, idx: int) -> bool: ...

    async def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.vol.size:
            raise InvalidInput("read beyond the end of the volume")
        es = self.vol.extent_size
        out = bytearray()
        pos = offset
        while pos < offset + length:
            idx, off = divmod(pos, es)
            n = min(es - off, offset + length - pos)
            data = await self.read_extent(idx)
            out += bytes(n) if data is None else data[off:off + n]
            pos += n
        return bytes(out)

    async def write(self, offset: int, data: bytes) -> None:
        """Write bytes, read-modify-writing partial extents; durable when it returns."""
        if offset < 0 or offset + len(data) > self.vol.size:
            raise InvalidInput("write beyond the end of the volume")
        es = self.vol.extent_size
        pos = 0
        while pos < len(data):
            idx, off = divmod(offset + pos, es)
            n = min(self.extent_len(idx) - off, len(data) - pos)
            if off == 0 and n == self.extent_len(idx):
                buf = bytearray(data[pos:pos + n])
            else:
                cur = await self.read_extent(idx)
                buf = bytearray(cur if cur is not None else bytes(self.extent_len(idx)))
                buf[off:off + n] = data[pos:pos + n]
            await self.write_extent(idx, bytes(buf))
            pos += n

    async def trim(self, offset: int, length: int) -> None:
        """Punch a hole: whole extents are dropped, partial edges are zeroed."""
        es = self.vol.extent_size
        end = min(offset + length, self.vol.size)
        pos = offset
        while pos < end:
            idx, off = divmod(pos, es)
            n = min(self.extent_len(idx) - off, end - pos)
            if off == 0 and n == self.extent_len(idx):
                await self.trim_extent(idx)
            elif self.holds_data(idx):
                await self.write(pos, bytes(n))
            pos += n
