"""A bounded pool of reusable byte buffers for the read path.

A fresh multi-megabyte `bytes` per segment costs more than the bytes it carries: the
allocator maps new pages for it and the kernel zeroes and faults them in on first touch
(measured here: joining four 1 MiB blocks into a new 4 MiB object ~0.9 s/GB; copying into a
reused buffer ~0.1). Shard frames are received into, and segments are decrypted into,
buffers taken from this pool and given back once their bytes have left the process.
"""

from __future__ import annotations

import sys
import threading
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


class Lent(bytearray):
    """A block from a `LendingPool`: its bytes never change while anything refers to it (a
    view, a list, a thread's argument), so a consumer may hold it like `bytes`, uncopied."""

    __slots__ = ()


class LendingPool:
    """Blocks of `size` bytes reused once nothing but the pool refers to them.

    A block is never given back: the pool keeps (at most `keep` of) the blocks it made and
    lends one again only when its reference count shows that no view, queue, coroutine or
    thread still holds it (CPython counts references exactly; a memoryview slice holds its
    base). So a buffer still read by a coding thread or a send is never refilled, and a
    consumer that keeps a block only delays its reuse. Thread-safe.
    """

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self._keep = keep
        self._blocks: list[Lent] = []
        self._lock = threading.Lock()

    def take(self) -> Lent:
        """A block nothing else refers to (old contents: callers overwrite what they use)."""
        with self._lock:
            blocks = self._blocks
            for i in range(len(blocks)):
                if sys.getrefcount(blocks[i]) == _IDLE_REFS:
                    return blocks[i]
            block = Lent(self.size)
            if len(blocks) < self._keep:
                blocks.append(block)
            return block

    def trim(self) -> None:
        """Let go of the idle blocks (malloc reuses their memory); lent ones stay kept."""
        with self._lock:
            blocks = self._blocks
            self._blocks = [blocks[i] for i in range(len(blocks))
                            if sys.getrefcount(blocks[i]) != _IDLE_REFS]

    @property
    def kept(self) -> int:
        """Blocks the pool owns (lent out or idle)."""
        return len(self._blocks)


_probe = [Lent(1)]
_IDLE_REFS = sys.getrefcount(_probe[0])  # held by its list only (and the call's argument)
del _probe
