"""A bounded pool of reusable byte buffers for the read path.

A fresh multi-megabyte `bytes` per segment costs more than the bytes it carries: the
allocator maps new pages for it and the kernel zeroes and faults them in on first touch
(measured here: joining four 1 MiB blocks into a new 4 MiB object ~0.9 s/GB; copying into a
reused buffer ~0.1). Shard frames are received into, and segments are decrypted into,
buffers taken from this pool and given back once their bytes have left the process.
"""

from __future__ import annotations

from collections import defaultdict


class BufferPool:
    """Free lists of bytearrays by exact size, holding at most `max_bytes` in all.

    `take` returns a buffer of exactly `size` bytes (old contents: callers overwrite);
    `give` returns it. A buffer given beyond the bound is dropped for the GC to free.
    Not thread-safe: used from one event loop.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._free: defaultdict[int, list[bytearray]] = defaultdict(list)
        self._held = 0

    def take(self, size: int) -> bytearray:
        free = self._free.get(size)
        if free:
            self._held -= size
            return free.pop()
        return bytearray(size)

    def give(self, buf: bytearray) -> None:
        size = len(buf)
        if self._held + size <= self.max_bytes:
            self._free[size].append(buf)
            self._held += size

    @property
    def held(self) -> int:
        """Bytes sitting in the free lists."""
        return self._held
