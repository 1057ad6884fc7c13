"""A bounded pool of reusable byte buffers for the read path.

A fresh multi-megabyte `bytes` per segment costs more than the bytes it carries: the
allocator maps new pages for it and the kernel zeroes and faults them in on first touch
(measured here: joining four 1 MiB blocks into a new 4 MiB object ~0.9 s/GB; copying into a
reused buffer ~0.1). Shard frames are received into, and segments are decrypted into,
buffers taken from this pool and given back once their bytes have left the process.
"""

from __future__ import annotations

import asyncio
import mmap
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar


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


_Block = TypeVar("_Block", Lent, mmap.mmap)


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
            self._blocks = _lent(self._blocks)

    @property
    def kept(self) -> int:
        """Blocks the pool owns (lent out or idle)."""
        return len(self._blocks)


class LendingPools:
    """Blocks of any size, at most `keep_bytes` of them kept in all (lent out or idle): for
    buffers whose size is set by a configuration (a full segment's frame set), not by a
    request. A block of a new size takes the room of idle blocks of other sizes (they are
    let go) when the cap is reached; a size no room can be made for gets None (the caller
    allocates). Reuse follows `LendingPool`: a block is lent again only once nothing but
    the pool refers to it. Each block is a private anonymous mapping: its pages are faulted
    in once and reused after, and given back to the kernel the moment the block is let go
    (`trim`), rather than left as free holes in malloc's heap. Thread-safe."""

    def __init__(self, keep_bytes: int) -> None:
        self._keep_bytes = keep_bytes
        self._blocks: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def lend(self, size: int) -> mmap.mmap | None:
        """A block of `size` bytes nothing else refers to (old contents), or None when no
        idle one of that size is kept and a new one does not fit under the cap even with
        the idle blocks of other sizes let go."""
        with self._lock:
            blocks = self._blocks  # indexed, never bound to a name: see _IDLE_REFS
            kept = idle = 0
            for i in range(len(blocks)):
                n = len(blocks[i])
                if sys.getrefcount(blocks[i]) == _IDLE_REFS:
                    if n == size:
                        return blocks[i]
                    idle += n
                kept += n
            if kept - idle + size > self._keep_bytes:
                return None  # lent blocks leave no room for it
            i = 0
            while kept + size > self._keep_bytes:  # oldest idle blocks of other sizes go
                if sys.getrefcount(blocks[i]) == _IDLE_REFS:
                    kept -= len(blocks.pop(i))
                else:
                    i += 1
            block = _mapping(size)
            blocks.append(block)
            return block

    def trim(self) -> None:
        """Let go of every idle block (malloc reuses their memory); lent ones stay kept."""
        with self._lock:
            self._blocks = _lent(self._blocks)

    @property
    def kept(self) -> int:
        """Bytes of blocks kept (lent out or idle)."""
        with self._lock:
            return sum(len(b) for b in self._blocks)


def _lent(blocks: list[_Block]) -> list[_Block]:
    """The blocks of `blocks` something besides the pool refers to (the idle ones dropped);
    `LendingPool.trim` and `LendingPools.trim` keep these."""
    return [blocks[i] for i in range(len(blocks)) if sys.getrefcount(blocks[i]) != _IDLE_REFS]


def _mapping(size: int) -> mmap.mmap:
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


class IdleTrim:
    """Counts the users of a pool; calls `trim` once none was active for `idle_s` seconds
    since the last one ended (kept blocks are for bursts, not for an idle process).

    The timer is due `idle_s` after the first idle moment and, if a user came and went
    since, is moved to `idle_s` after the last end, so back-to-back users keep the pool.
    It lives on the loop of the `end` that set it; an `end` on another loop (the first one
    closed or stopped: test and tool processes run several) sets a new one there, and a
    stale one firing later does nothing. One loop at a time: `active` is not locked.
    """

    def __init__(self, trim: Callable[[], None], idle_s: float) -> None:
        self.active = 0
        self._trim_pool = trim
        self._idle_s = idle_s
        self._last_end = 0.0  # loop.time() (monotonic) of the last end()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin(self) -> None:
        self.active += 1

    def end(self) -> None:
        self.active -= 1
        loop = asyncio.get_running_loop()
        self._last_end = loop.time()
        if not self.active and (self._handle is None or self._loop is not loop):
            self._loop = loop
            self._handle = loop.call_later(self._idle_s, self._due, loop)

    def _due(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return  # a timer left on a loop no longer used: the current loop's one counts
        self._handle = None
        if self.active:
            return  # the last of them to end sets the timer again
        left = self._last_end + self._idle_s - loop.time()
        if left > 0:
            self._handle = loop.call_later(left, self._due, loop)
        else:
            self._trim_pool()


_probe = [Lent(1)]
_IDLE_REFS = sys.getrefcount(_probe[0])  # held by its list only (and the call's argument)
del _probe
