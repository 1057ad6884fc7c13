"""A large shard's bytes written around the page cache (O_DIRECT), for streamed shard PUTs.

A buffered `write` copies every byte into page-cache pages the kernel must find (and, on a
VM whose memory the host backs lazily, fault in) and later write back during the commit's
fsync: perf of the nodes under a 64 MiB PUT put 46% of their samples in that copy
(`copy_folio_from_iter_atomic`). Here the received bytes are copied once into a reused,
page-aligned buffer and written from it with O_DIRECT (the device reads the buffer
itself); only the unaligned tail of the file goes through the page cache. The commit still
fsyncs the file and its directory: O_DIRECT bypasses the page cache, not the device's
write cache, so the fsync stays the durability barrier.

A file system without O_DIRECT (tmpfs) refuses the flag and the writer stays buffered.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import threading
from collections import deque
from collections.abc import Sequence

ALIGN = 4096  # file offsets, lengths and the buffer's address: any logical block size <= 4 KiB
BUFFER_BYTES = 1024 * 1024  # one device write per MiB
POOL_MAX = 32  # free buffers a node process keeps (32 MiB); more are unmapped on return
DIRECT_MIN_BYTES = 2 * BUFFER_BYTES  # shard PUT bodies from this size on (or of unknown
# length) are written around the page cache: the shards of objects from 8 MiB (4 MiB
# segments). Smaller ones stay buffered: the 1.25-2 MiB shards of 5-8 MiB objects (1 MiB
# segments) gained no PUT CPU written direct, and their GETs right after cost ~1.5x
_POOL: deque[mmap.mmap] = deque()  # append/pop are atomic: writer threads share it


def take_buffer() -> mmap.mmap:
    """A page-aligned BUFFER_BYTES buffer from the pool (or a new one)."""
    try:
        return _POOL.pop()
    except IndexError:
        return mmap.mmap(-1, BUFFER_BYTES)  # anonymous mappings are page-aligned


def give_buffer(buf: mmap.mmap) -> None:
    """Return a buffer no view or write holds any more to the pool."""
    if len(_POOL) < POOL_MAX:
        _POOL.append(buf)
    else:
        with contextlib.suppress(BufferError):  # still exported somewhere: the GC unmaps it
            buf.close()


def writes_direct(length: int | None) -> bool:
    """Whether a shard PUT body of `length` bytes (None: chunked, unknown) is written with
    O_DIRECT. Not only the shards of objects from 16 MiB (4 MiB and more): the 2-4 MiB
    shards of 8-16 MiB objects went through the page cache too, and its copy into fresh
    pages made an 8 MiB PUT cost the nodes ~4x the CPU per byte of a 64 MiB one."""
    return length is None or length >= DIRECT_MIN_BYTES


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for `fd`; False when the file system refuses it."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)
    except OSError:
        return False
    return True


class DirectAppender:
    """Appends to a file opened for writing at offset 0, in ALIGN-multiple O_DIRECT writes
    from a pooled aligned buffer; `close` writes what is left (the unaligned tail
    buffered). One writer thread at a time, as `ShardWriter` calls it; `release` may come
    from another thread while a write is still in the kernel (a cancelled upload), so the
    buffer goes back to the pool only when no write holds it (`_busy`)."""

    def __init__(self, fd: int, buf: mmap.mmap) -> None:
        self._fd = fd
        self._busy = threading.Lock()  # held while the buffer is filled or written from
        self._buf: mmap.mmap | None = buf
        self._view = memoryview(buf)
        self._fill = 0
        self._direct = True

    @classmethod
    def open(cls, fd: int) -> DirectAppender | None:
        """An appender for `fd`, or None when its file system has no O_DIRECT."""
        if not hasattr(os, "O_DIRECT") or not _set_direct(fd, True):
            return None
        return cls(fd, take_buffer())

    def append(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        with self._busy:
            if self._buf is None:
                raise ValueError("the appender was released")
            self._append(parts)

    def append_aligned(self, parts: Sequence[memoryview]) -> None:
        """Append `parts`, page-aligned memory (`take_buffer`'s): while nothing is buffered,
        their whole ALIGN multiples go to the disk straight from them in one `writev` (no
        copy); from the first part that is not one on, the bytes are copied as `append`."""
        with self._busy:
            if self._buf is None:
                raise ValueError("the appender was released")
            direct: list[memoryview] = []
            rest: list[memoryview] = []
            for part in parts:
                cut = len(part) - len(part) % ALIGN if not rest and not self._fill else 0
                if cut:
                    direct.append(part[:cut])
                if cut < len(part):
                    rest.append(part[cut:])
            if direct:
                self._writev(direct)
            self._append(rest)

    def _writev(self, views: list[memoryview]) -> None:
        """Write `views` (ALIGN multiples at an aligned offset: nothing is buffered) in
        order, O_DIRECT while the file system takes it, buffered from then on."""
        while views:
            try:
                n = os.writev(self._fd, views[:512])
            except OSError as exc:  # a file system that took the flag but not the I/O
                if exc.errno != errno.EINVAL or not self._direct:
                    raise
                self._buffered()
                continue
            if n % ALIGN:  # a short write off the alignment: finish buffered
                self._buffered()
            while n:
                if n >= len(views[0]):
                    n -= len(views.pop(0))
                else:
                    views[0] = views[0][n:]
                    n = 0

    def _append(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        view, size = self._view, BUFFER_BYTES
        for part in parts:
            src = memoryview(part).cast("B")
            while src:
                n = min(size - self._fill, len(src))
                view[self._fill:self._fill + n] = src[:n]
                self._fill += n
                src = src[n:]
                if self._fill == size:
                    self._write(size)

    def close(self) -> None:
        """Write everything still buffered (the aligned part direct, the rest buffered) and
        return the buffer to the pool. The caller fsyncs."""
        with self._busy:
            if self._buf is None:
                return
            try:
                self._write(self._fill - self._fill % ALIGN)
                if self._fill:
                    self._buffered()
                    _write_all(self._fd, self._view[:self._fill])
                    self._fill = 0
            finally:
                self._give_back()

    def release(self) -> None:
        """Give the buffer back without writing (an aborted upload). Idempotent. If a write
        still reads the buffer (its thread cannot be cancelled), the buffer is abandoned to
        the garbage collector instead of pooled, so no other upload can fill it under it."""
        if not self._busy.acquire(blocking=False):
            self._buf = None  # the writing thread keeps its view; nothing reuses the memory
            return
        try:
            self._give_back()
        finally:
            self._busy.release()

    def _give_back(self) -> None:
        buf, self._buf = self._buf, None
        if buf is not None:
            self._view.release()
            give_buffer(buf)

    def _write(self, n: int) -> None:
        """Write the first `n` (an ALIGN multiple) buffered bytes; keep the rest in front."""
        if not n:
            return
        done = 0
        while done < n:
            if self._direct:
                try:
                    w = os.write(self._fd, self._view[done:n])
                except OSError as exc:  # a file system that took the flag but not the I/O
                    if exc.errno != errno.EINVAL:
                        raise
                    self._buffered()
                    continue
                if w % ALIGN:  # a short write off the alignment: finish buffered
                    self._buffered()
            else:
                w = os.write(self._fd, self._view[done:n])
            done += w
        rest = self._fill - n
        if rest:
            self._view[:rest] = self._view[n:self._fill]
        self._fill = rest

    def _buffered(self) -> None:
        if self._direct:
            self._direct = False
            with contextlib.suppress(OSError):
                _set_direct(self._fd, False)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def warm(fd: int) -> None:
    """Ask the kernel to read a direct-written file back into the page cache
    (POSIX_FADV_WILLNEED: the reads are queued, not waited for). A data shard is what a
    GET reads, often soon after its PUT; O_DIRECT left none of its pages cached, and a
    cold GET of a 64 MiB object cost ~1 s/GB more server CPU than a warm one (benchmarks
    README, session 8, `get8`). Best effort: the hint's failure changes nothing."""
    with contextlib.suppress(OSError, AttributeError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
