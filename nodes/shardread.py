"""Reading one shard file: its header, then whole frames verified before they leave
(`ShardReadStream`), either as bytes or checked and sent with sendfile.

Shard files are read with pread, never mapped: a file that shrinks under a mapping (a
truncating fault, a lying disk) raises SIGBUS on the next access past its new end and kills
the node; a short pread is a ShardCorrupt ("file shrank") and a quarantine.

The layout, frame check and durable write of a shard file are `nodes.shardfile`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading

from nodes.pagecache import resident
from nodes.shardfile import (
    CHUNK_BYTES,
    Layout,
    ShardLocation,
    file_identity,
    frame_error,
    in_thread,
    open_layout,
    open_location,
    read_exact,
)
from storage.errors import InvalidInput, InvalidRange, ShardCorrupt
from storage.shards.format import FRAME_HEAD, FRAME_HEAD_BYTES, HEADER_BYTES, ShardHeader

SEND_WINDOW_BYTES = 8 * 1024 * 1024  # frames checked per thread hop before sendfile
INLINE_WINDOW_BYTES = 1024 * 1024  # a first window this small, all in the page cache, is
# checked on the event loop (a hot shard's): the worker-thread hop cost more than the check
RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)  # a read that fails rather than wait for the disk
_resident = bytearray(INLINE_WINDOW_BYTES)  # the event loop's copy of a resident window
_scratch = threading.local()  # each worker thread's copy of the window it checks
POPULATE_CHUNK_BYTES = 256 * 1024  # read-ahead into the page cache, a cache-sized piece at a time


class ShardReadStream:
    """Async iterator over a shard: its header bytes, then whole, verified frames in pieces.

    Nothing touches the disk until the first `__anext__`, which raises NotFound or
    ShardCorrupt (bad header) or InvalidRange (`first` past the last frame). After it,
    `header`, `segments`, `size` and `body_bytes` (bytes this stream yields in all) are set.
    A frame that fails its checksum raises ShardCorrupt before any of its bytes is yielded;
    the frames before it in the same piece are yielded first.

    `reader_checks` (the reader checks every frame's checksum and length itself, as the
    gateway's `FrameAssembler` does): the windows for sendfile are only made resident
    here, not checked, except the shard's last frame's length (a truncated file must still
    be a 409 and a quarantine: its reader would only see a short body). Any doubt about
    that frame falls back to the full check.
    """

    def __init__(self, sid: str, where: ShardLocation, first: int, count: int | None) -> None:
        if first < 0 or (count is not None and count < 0):
            raise InvalidInput("first and count must be non-negative")
        self.shard_id = sid
        self.header: ShardHeader | None = None
        self.segments = 0
        self.size = 0
        self.body_bytes = 0
        self.first = first
        self.end = first
        self._where = where
        self._size = where.size
        self.base = where.base  # file offset of the shard's byte 0: shard offsets + base
        # are the file's (every pread and every window handed to sendfile)
        self._count = count
        self._fd: int | None = None
        self._layout: Layout | None = None
        self._next = first
        self._pending_error: ShardCorrupt | None = None
        self._ahead: tuple[bytes, ShardCorrupt | None] | None = None  # read with the open
        self._finished = False
        self.reader_checks = False

    def __aiter__(self) -> ShardReadStream:
        return self

    async def __anext__(self) -> bytes:
        if self._finished:
            raise StopAsyncIteration
        if self._layout is None:
            try:
                return await asyncio.to_thread(self._open_ahead_sync)
            except BaseException:
                await self.aclose()
                raise
        if self._pending_error is not None:
            err, self._pending_error = self._pending_error, None
            await self.aclose()
            raise err
        if self._ahead is not None:
            (data, err), self._ahead = self._ahead, None
        elif self._next >= self.end:
            await self.aclose()
            raise StopAsyncIteration
        else:
            try:
                data, err = await asyncio.to_thread(self._read_sync)
            except BaseException:
                await self.aclose()
                raise
        if err is not None:
            if not data:
                await self.aclose()
                raise err
            self._pending_error = err
        return data

    def _open_fd(self) -> int:
        if self._fd is None:
            self._fd, where = open_location(self._where, self.shard_id)
            self._where, self._size, self.base = where, where.size, where.base
        return self._fd

    def _corrupt(self, detail: str) -> ShardCorrupt:
        """A ShardCorrupt naming the file this stream reads (its fd is open)."""
        assert self._fd is not None
        return ShardCorrupt(self.shard_id, detail, file_identity(self._fd, self.base))

    def _open_sync(self) -> bytes:
        self._open_fd()
        layout = open_layout(self._fd, self.shard_id, self.base, self._size)
        self.header, self.size, self.segments = layout.header, layout.size, layout.segments
        if self.first > self.segments:
            raise InvalidRange(self.segments)
        self.end = self.segments if self._count is None else min(
            self.segments, self.first + self._count)
        self.body_bytes = HEADER_BYTES + (
            layout.frame_end(self.end - 1) - layout.header.frame_offset(self.first)
            if self.end > self.first else 0)
        self._layout = layout
        return layout.header.pack()

    def _open_ahead_sync(self) -> bytes:
        """`_open_sync`, and the first piece read in the same thread hop (kept for the
        next `__anext__`; an OSError is left for that call's own read to raise)."""
        head = self._open_sync()
        if self.end > self._next:
            with contextlib.suppress(OSError):
                self._ahead = self._read_sync()
        return head

    def _read_sync(self) -> tuple[bytes, ShardCorrupt | None]:
        layout = self._layout
        assert layout is not None and self._fd is not None
        n = max(1, min(self.end - self._next, CHUNK_BYTES // layout.frame_bytes))
        start = layout.header.frame_offset(self._next)
        want = layout.frame_end(self._next + n - 1) - start
        buf = read_exact(self._fd, want, self.base + start)
        good = 0
        err: ShardCorrupt | None = None
        for seg in range(self._next, self._next + n):
            off = layout.header.frame_offset(seg) - start
            end = layout.frame_end(seg) - start
            if end > len(buf):
                err = self._corrupt(f"segment {seg}: file shrank while reading")
                break
            problem = frame_error(layout, seg, buf, off)
            if problem is not None:
                err = self._corrupt(problem)
                break
            good = end
        self._next += n
        return (buf if good == len(buf) else buf[:good]), err

    async def open_verified(self, max_bytes: int = SEND_WINDOW_BYTES, hot: bool = False,
                            ) -> tuple[bytes, tuple[int, int, ShardCorrupt | None]]:
        """The first `__anext__` (header bytes; NotFound, ShardCorrupt, InvalidRange) and
        the first `verified_window`, in one trip to a worker thread.

        `hot` (a shard the node wrote or read lately: its directory entry is most likely
        cached): opened on the event loop and, when its header and a first window of at
        most INLINE_WINDOW_BYTES are in the page cache (reads with RWF_NOWAIT say so),
        checked there too, with no thread hop; what is not cached goes to the thread."""
        def both() -> tuple[bytes, tuple[int, int, ShardCorrupt | None]]:
            head = self._open_sync()
            if self._next >= self.end:
                return head, (0, 0, None)
            return head, self._verify_window_sync(max_bytes)

        try:
            header = self._resident(0, HEADER_BYTES) if hot and RWF_NOWAIT else None
            if header is None:
                return await in_thread(both)
            header.release()
            head = self._open_sync()
            if self._next >= self.end:
                return head, (0, 0, None)
            window = self._verify_resident(max_bytes)
            if window is None:
                window = await in_thread(lambda: self._verify_window_sync(max_bytes))
            return head, window
        except BaseException:
            await self.aclose()
            raise

    def fileno(self) -> int:
        """The open shard file (after the first `__anext__`), for sendfile."""
        assert self._fd is not None
        return self._fd

    async def verified_window(self, max_bytes: int = SEND_WINDOW_BYTES,
                              ) -> tuple[int, int, ShardCorrupt | None]:
        """Check the next frames (about `max_bytes` of them) in place, for sending with
        sendfile: (file offset, bytes that verified, the error that stopped it or None).
        (offset, 0, None) when every frame asked for was checked. The frames are read
        into a worker thread's scratch buffer, off the event loop."""
        if self._next >= self.end or self._layout is None:
            return self.base + (self._layout.frame_end(self.end - 1)
                                if self._layout and self.end > 0 else 0), 0, None
        if self.reader_checks:  # a resident window needs no thread: nothing to compute
            window = self._verify_resident(max_bytes)
            if window is not None:
                return window
        return await asyncio.to_thread(self._verify_window_sync, max_bytes)

    def _window(self, max_bytes: int) -> tuple[int, int, int]:
        """(frames, shard offset of the first, end offset) of the next window to check."""
        layout = self._layout
        assert layout is not None and self._fd is not None
        n = max(1, min(self.end - self._next, max_bytes // layout.frame_bytes))
        start = layout.header.frame_offset(self._next)
        return n, start, min(layout.frame_end(self._next + n - 1), layout.size)

    def _verify_window_sync(self, max_bytes: int) -> tuple[int, int, ShardCorrupt | None]:
        n, start, stop = self._window(max_bytes)
        if stop <= start:
            self._next = self.end
            return self.base + start, 0, self._corrupt(f"segment {self._next}: truncated")
        if self.reader_checks:
            window = self._unchecked(n, start, stop, populate=not resident(
                self._fd, self.base + start, stop - start))  # type: ignore[arg-type]
            if window is not None:
                return window
        view = self._read_window(start, stop)
        try:
            good, err = self._check(n, view, start, start)
        finally:
            view.release()
        self._next += n
        return self.base + start, good, err

    def _unchecked(self, n: int, start: int, stop: int, populate: bool,
                   ) -> tuple[int, int, ShardCorrupt | None] | None:
        """The window [start, stop) of `n` frames, sent as it is (`reader_checks`), or None
        when the shard's last frame is in it and its length does not match the file (then
        the full check decides). `populate` (a worker thread): the window's pages are read
        into the page cache first, so sendfile on the event loop does not wait for the disk."""
        layout = self._layout
        assert layout is not None and self._fd is not None
        last = self._next + n - 1
        if last == layout.segments - 1:
            off = layout.header.frame_offset(last)
            raw = os.pread(self._fd, FRAME_HEAD_BYTES, self.base + off)
            if len(raw) < FRAME_HEAD_BYTES or FRAME_HEAD.unpack(raw)[0] != (
                    layout.frame_end(last) - off - FRAME_HEAD_BYTES):
                return None
        if populate:
            self._populate(start, stop)
        self._next += n
        return self.base + start, stop - start, None

    def _populate(self, start: int, stop: int) -> None:
        """The shard's bytes [start, stop) read into the page cache (sendfile then does not
        wait for the disk), through a small buffer that stays in the CPU cache: nothing
        keeps them, so no window-sized copy is made or held."""
        assert self._fd is not None
        buf: bytearray | None = getattr(_scratch, "small", None)
        if buf is None:
            buf = _scratch.small = bytearray(POPULATE_CHUNK_BYTES)
        with memoryview(buf) as view:
            while start < stop:
                n = os.preadv(self._fd, [view[:stop - start]], self.base + start)
                if n <= 0:
                    return  # shrank: the last frame's check or sendfile's short count says so
                start += n

    def _read_window(self, start: int, stop: int) -> memoryview:
        """The shard's bytes [start, stop) as far as the file holds them (shorter if it shrank),
        read into this thread's scratch buffer (a view of it: release before the next call)."""
        assert self._fd is not None
        buf: bytearray | None = getattr(_scratch, "buf", None)
        if buf is None or len(buf) < stop - start:
            buf = _scratch.buf = bytearray(stop - start)
        view = memoryview(buf)[:stop - start]
        got = 0
        while got < len(view):
            n = os.preadv(self._fd, [view[got:]], self.base + start + got)
            if n <= 0:
                break
            got += n
        short = view[:got]
        view.release()
        return short

    def _verify_resident(self, max_bytes: int) -> tuple[int, int, ShardCorrupt | None] | None:
        """`_verify_window_sync` on the calling thread, from a copy of the window, when it
        is small and every byte of it is in the page cache; None (nothing done) if not."""
        n, start, stop = self._window(max_bytes)
        if self.reader_checks and start < stop:
            if not resident(self._open_fd(), self.base + start, stop - start):
                return None
            return self._unchecked(n, start, stop, populate=False)
        if not start < stop <= start + INLINE_WINDOW_BYTES:
            return None
        view = self._resident(start, stop - start)
        if view is None:
            return None
        try:
            good, err = self._check(n, view, start, start)
        finally:
            view.release()
        self._next += n
        return self.base + start, good, err

    def _resident(self, offset: int, nbytes: int) -> memoryview | None:
        """The shard's `nbytes` from `offset` (a view of the loop's scratch buffer) when all
        are in the page cache; None when reading them would wait for the disk (EAGAIN from
        RWF_NOWAIT), the file system has no RWF_NOWAIT (tmpfs: EOPNOTSUPP) or the file is
        shorter (the thread's read reports that)."""
        view = memoryview(_resident)[:nbytes]
        try:
            got = os.preadv(self._open_fd(), [view], self.base + offset, RWF_NOWAIT)
        except OSError as exc:  # EAGAIN: not cached; EOPNOTSUPP: no RWF_NOWAIT (tmpfs)
            if exc.errno not in (errno.EAGAIN, errno.EOPNOTSUPP):
                view.release()
                raise
            got = -1
        if got != nbytes:
            view.release()
            return None
        return view

    def _check(self, n: int, view: memoryview, base: int, start: int,
               ) -> tuple[int, ShardCorrupt | None]:
        """Check the next `n` frames in `view` (shard bytes from offset `base`): (bytes from
        `start` that verified, the error that stopped it or None)."""
        layout = self._layout
        assert layout is not None
        good = 0
        for seg in range(self._next, self._next + n):
            off = layout.header.frame_offset(seg) - base
            end = layout.frame_end(seg) - base
            if end > len(view):
                return good, self._corrupt(f"segment {seg}: file shrank")
            problem = frame_error(layout, seg, view, off)
            if problem is not None:
                return good, self._corrupt(problem)
            good = end - (start - base)
        return good, None

    async def aclose(self) -> None:
        self._finished = True
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    async def __aenter__(self) -> ShardReadStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
