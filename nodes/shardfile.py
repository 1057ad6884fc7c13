"""One shard file: its id, its layout (frame i at `header.frame_offset(i)`), its durable
write (`ShardWriter`: temp file, fsync, rename or link, directory fsync), its range read
(`nodes.shardread.ShardReadStream`) and the in-place check of its frames. The directory of shard files is
`nodes.disk.DiskShardStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from nodes.directio import DirectAppender, warm
from storage.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    ShardCorrupt,
)
from storage.shards.format import (
    FRAME_HEAD,
    FRAME_HEAD_BYTES,
    HEADER_BYTES,
    ShardHeader,
    frame_checksum,
)
from storage.shards.ids import parse_shard_id, shard_id

if TYPE_CHECKING:
    from nodes.disk import DiskShardStore

CHUNK_BYTES = 1024 * 1024
T = TypeVar("T")
UNCHANGED = -2  # commit outcome: an identical shard was already stored under the id
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}  # O_TMPFILE not supported
_NO_LINK = {errno.EPERM, errno.EACCES, errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL}  # nor its link


def _same_range(path: Path | str, fd: int, base: int, n: int) -> bool:
    """True when the file at `path` holds exactly bytes [base, base+n) of open `fd`."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size != n:
            return False
        pos = 0
        while pos < n:
            want = min(CHUNK_BYTES, n - pos)
            if not hmac.compare_digest(f.read(want), read_exact(fd, want, base + pos)):
                return False
            pos += want
    return True


def in_thread(fn: Callable[[], T]) -> Awaitable[T]:
    """Run `fn` on the loop's default worker pool: `asyncio.to_thread` without its copy of
    the context (nothing below reads context variables), one hop a request for small shards."""
    return asyncio.get_running_loop().run_in_executor(None, fn)


class ShardExists(Conflict):
    """A shard with other bytes is committed under this id and the PUT was not a rewrite."""

    def __init__(self, sid: str) -> None:
        super().__init__(f"shard {sid} exists with other content")
        self.shard_id = sid


class BodyMismatch(IntegrityError):
    """The bytes received are not the ones the request's body MAC covers."""


def _same_file(a: Path | str, b: Path | str) -> bool:
    """True when two files hold the same bytes (read in chunks)."""
    if os.stat(a).st_size != os.stat(b).st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(CHUNK_BYTES), fb.read(CHUNK_BYTES)
            if x != y:
                return False
            if not x:
                return True


def install_new(tmp: Path | str, path: Path | str, sid: str, replace: bool) -> int:
    """Move a finished temp file to `path`; the size it replaced, -1 when new, or UNCHANGED.

    With `replace` (an explicit repair or rewrite) an existing shard is replaced atomically.
    Without it, the shard is created only if absent (link, never clobbering a racing writer);
    an existing identical shard makes the PUT an idempotent success, other bytes raise
    ShardExists. The caller fsyncs the directory.
    """
    if replace:
        try:
            replaced = os.stat(path).st_size
        except FileNotFoundError:
            replaced = -1
        os.replace(tmp, path)
        return replaced
    try:
        os.link(tmp, path)
    except FileExistsError:
        same = _same_file(tmp, path)
        os.unlink(tmp)
        if not same:
            raise ShardExists(sid) from None
        return UNCHANGED
    os.unlink(tmp)
    return -1


def check_shard_id(sid: str) -> tuple[bytes, int]:
    """Validate a shard id (canonical form only); raise InvalidInput otherwise."""
    try:
        stripe, index = parse_shard_id(sid)
    except (ValueError, TypeError):
        raise InvalidInput("malformed shard id") from None
    if shard_id(stripe, index) != sid:
        raise InvalidInput("malformed shard id")
    return stripe, index


@dataclass(frozen=True)
class Layout:
    """Where the frames of one shard file are, computed from its header and size."""

    header: ShardHeader
    size: int

    @property
    def frame_bytes(self) -> int:
        return FRAME_HEAD_BYTES + self.header.block_size

    @property
    def segments(self) -> int:
        body = self.size - HEADER_BYTES
        return 0 if body <= 0 else -(-body // self.frame_bytes)

    def frame_end(self, segment: int) -> int:
        return min(self.header.frame_offset(segment + 1), self.size)


def frame_error(layout: Layout, segment: int, buf: bytes | memoryview, off: int) -> str | None:
    """Why frame `segment` (at `off` in `buf`) is bad, or None when it verifies."""
    start = layout.header.frame_offset(segment)
    expect = layout.frame_end(segment) - start - FRAME_HEAD_BYTES
    if expect <= 0:
        return f"segment {segment}: truncated frame"
    length, crc = FRAME_HEAD.unpack_from(buf, off)
    if length != expect:
        return f"segment {segment}: frame length {length}, expected {expect}"
    block = memoryview(buf)[off + FRAME_HEAD_BYTES: off + FRAME_HEAD_BYTES + length]
    if frame_checksum(layout.header, segment, block) != crc:
        return f"segment {segment}: checksum mismatch"
    return None


def read_exact(fd: int, n: int, offset: int) -> bytes:
    parts: list[bytes] = []
    while n > 0:
        b = os.pread(fd, n, offset)
        if not b:
            break
        parts.append(b)
        n -= len(b)
        offset += len(b)
    return b"".join(parts)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def writev_all(fd: int, parts: list[bytes | memoryview], offset: int | None = None) -> None:
    """os.writev of every part (os.pwritev at `offset` when given), resuming after short
    writes, at most IOV_MAX / 2 iovecs at a time."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        if offset is None:
            n = os.writev(fd, views[:512])
        else:
            n = os.pwritev(fd, views[:512], offset)
            offset += n
        while n and views:
            if n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][n:]
                n = 0


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_identity(fd: int, base: int = 0) -> tuple[int, ...]:
    """Which shard a check read, whatever its path or index says now: (st_dev, st_ino) of
    an open shard file; with the offset too for a range of a pack (`base` > 0: a record's
    body never starts at 0), so quarantine sets aside that record and not a newer copy
    appended to the same pack since."""
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino) if base == 0 else (st.st_dev, st.st_ino, base)


class ShardLocation(NamedTuple):
    """Where a shard's bytes are: [base, base+size) of the file at `path`. A shard file is
    `ShardLocation(path)` (from 0 to its end); a packed shard (`nodes.packstore`) is a range
    of its pack, with the record's write time as `mtime`. Every reader (reads, sendfile
    windows, stat, verify) takes one, so there is one read path for both."""

    path: str | Path
    base: int = 0
    size: int | None = None  # None: to the file's end
    mtime: float | None = None  # None: the file's
    relocate: Callable[[], ShardLocation] | None = None  # a packed shard: where it is now


RELOCATES = 8  # a shard compaction moves while it is being opened: located again this often


def open_location(where: ShardLocation, sid: str) -> tuple[int, ShardLocation]:
    """An fd open on the file `where` names, and the location it holds the shard at
    (NotFound when absent). A pack found gone was unlinked by compaction after the shard
    was located, and only once its records were durable elsewhere: locate again (else a
    false 404); an fd open before the unlink keeps reading the old pack's bytes."""
    for _ in range(RELOCATES):
        try:
            return os.open(where.path, os.O_RDONLY | os.O_CLOEXEC), where
        except FileNotFoundError:
            again = where.relocate() if where.relocate is not None else None
            if again is None or (again.path, again.base) == (where.path, where.base):
                break
            where = again
    raise NotFound(f"shard {sid} not found")


def open_layout(fd: int, sid: str, base: int = 0, size: int | None = None) -> Layout:
    """Read and check the header of an open shard (its bytes from `base`, `size` of them or
    to the file's end; ShardCorrupt when unusable)."""
    if size is None:
        size = os.fstat(fd).st_size - base
    raw = read_exact(fd, HEADER_BYTES, base)
    try:
        header = ShardHeader.unpack(raw)
    except IntegrityError as exc:
        raise ShardCorrupt(sid, f"header: {exc}", file_identity(fd, base)) from None
    stripe, index = parse_shard_id(sid)
    if header.stripe_id != stripe or header.index != index:
        raise ShardCorrupt(sid, "header names another shard", file_identity(fd, base))
    if header.block_size == 0:
        raise ShardCorrupt(sid, "header has block size 0", file_identity(fd, base))
    return Layout(header, size)


class ShardWriter:
    """One upload in progress: a temp file that becomes the shard on `commit`."""

    def __init__(self, store: DiskShardStore, sid: str, tmp_path: Path | str, fd: int | None,
                 path: Path | str | None = None) -> None:
        self.shard_id = sid
        self.digest: Any = None  # a hash fed every byte written, in the writer thread
        self.direct = False  # set before the first write: large shards skip the page cache
        self.warm = False  # set before commit: read a direct-written file back (data shards)
        self._appender: DirectAppender | None = None
        self.tmp_path = tmp_path
        self.path = store.path_of(sid) if path is None else path
        self.bytes_written = 0
        self._store = store
        self._fd: int | None = fd
        self._done = False
        # A worker thread's write and the discard's close never overlap: a cancelled task
        # cannot stop its thread, and a descriptor closed under a write could be reused by
        # another file (the write would land there) or the file made again after its unlink.
        self._io = threading.Lock()

    def _open_sync(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                               | getattr(os, "O_CLOEXEC", 0), 0o600)
            if self.direct:
                self._appender = DirectAppender.open(self._fd)
        return self._fd

    def _write_sync(self, data: bytes | bytearray | memoryview) -> None:
        self._write_many_sync([data])

    def _write_many_sync(self, parts: list[bytes | bytearray | memoryview]) -> None:
        with self._io:
            self._check_open()
            fd = self._open_sync()
            if self.digest is not None:
                for p in parts:
                    self.digest.update(p)  # same pass as the write, off the event loop
            if self._appender is not None:
                self._appender.append(parts)
            elif len(parts) == 1:
                write_all(fd, parts[0])
            else:
                writev_all(fd, parts)

    def _check_open(self) -> None:
        if self._done:
            raise RuntimeError("shard writer is closed")

    async def write_many(self, parts: list[bytes | memoryview]) -> None:
        """Append `parts` in one thread call (one writev), no joining copy."""
        if self._done:
            raise RuntimeError("shard writer is closed")
        n = sum(len(p) for p in parts)
        if not n:
            return
        await asyncio.to_thread(self._write_many_sync, parts)
        self.bytes_written += n

    def write_aligned_sync(self, parts: list[memoryview]) -> None:
        """`write_many` of page-aligned buffers' bytes, in the calling (worker) thread: an
        O_DIRECT writer writes them without copying them (`DirectAppender.append_aligned`)."""
        with self._io:
            self._check_open()
            fd = self._open_sync()
            if self.digest is not None:
                for p in parts:
                    self.digest.update(p)
            if self._appender is not None:
                self._appender.append_aligned(parts)
            else:
                writev_all(fd, list(parts))
            self.bytes_written += sum(map(len, parts))

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._done:
            raise RuntimeError("shard writer is closed")
        if not data:
            return
        await asyncio.to_thread(self._write_sync, data)
        self.bytes_written += len(data)

    async def commit(self, tail: bytes | bytearray | memoryview | list[bytes | memoryview] = b"",
                     *,
                     expect_digest: bytes | None = None, replace: bool = False) -> int:
        """Write `tail`, then make the shard durable under its name; return its size.

        With `expect_digest`, `digest` must end equal to it or nothing is committed
        (BodyMismatch). Without `replace`, other bytes under the id raise ShardExists.
        """
        if self._done:
            raise RuntimeError("shard writer is closed")

        parts = tail if isinstance(tail, list) else [tail]
        tail_bytes = sum(len(p) for p in parts)
        if self._fd is None and not self.direct \
                and self._store.packs_for(tail_bytes) is not None:
            try:
                replaced = await self._commit_packed(parts, expect_digest, replace)
            except BaseException:
                await self._discard()
                raise
            if replaced is not None:
                return self._committed(tail_bytes, replaced)
            expect_digest = None  # checked there already

        def _finish() -> int:
            expect = expect_digest
            if self._fd is None and not self.direct and not replace and \
                    self._store.unnamed_temp and self._store.packed_copy(
                        self.shard_id) is None:  # the whole shard is `tail`: one file, unnamed
                done = self._commit_unnamed_sync(parts, expect)
                if done is not None:
                    return done
                expect = None  # checked there already
            if tail_bytes:
                self._write_many_sync(parts)
            fd, self._fd = self._open_sync(), None
            if self._appender is not None:
                try:
                    self._appender.close()  # the rest of the bytes, before the fsync
                except BaseException:
                    os.close(fd)
                    raise
            if expect is not None and (self.digest is None or not hmac.compare_digest(
                    self.digest.digest(), expect)):
                os.close(fd)
                raise BodyMismatch("body does not match its signed MAC")
            return self._commit_sync(fd, replace)

        try:
            replaced = await in_thread(_finish)
        except BaseException:
            await self._discard()
            raise
        return self._committed(tail_bytes, replaced)

    def _committed(self, tail_bytes: int, replaced: int) -> int:
        """The bookkeeping of a commit that made the shard durable (`install_new`'s result)."""
        self.bytes_written += tail_bytes
        self._done = True
        if replaced == UNCHANGED:
            pass
        elif replaced >= 0:
            self._store._account(self.bytes_written - replaced, 0)
        else:
            self._store._account(self.bytes_written, 1)
        self._store.recent.touch(self.shard_id)  # just written: its reads may skip a hop
        return self.bytes_written

    def _check_body(self, parts: list[bytes | memoryview], expect_digest: bytes | None) -> None:
        """Feed `parts` to the body MAC and check it (BodyMismatch) before any disk write."""
        if expect_digest is None:
            return
        if self.digest is not None:
            for p in parts:
                self.digest.update(p)
        if self.digest is None or not hmac.compare_digest(self.digest.digest(), expect_digest):
            raise BodyMismatch("body does not match its signed MAC")
        self.digest = None  # fed already: a fallback must not feed it twice

    async def _commit_packed(self, parts: list[bytes | memoryview],
                             expect_digest: bytes | None, replace: bool) -> int | None:
        """A whole shard appended to the disk's packs, its MAC checked first
        (`DiskShardStore.put_packed`); None when a shard file decides instead."""
        return await self._store.put_packed(
            self.shard_id, parts, replace=replace,
            check=lambda: self._check_body(parts, expect_digest))

    def _commit_unnamed_sync(self, parts: list[bytes | memoryview],
                             expect_digest: bytes | None) -> int | None:
        """A whole shard's durable commit without a named temp file: the body MAC checked
        first (a refused body touches no disk), then an O_TMPFILE file in the shard's own
        directory, written, fsynced, linked in (never clobbering) and the directory fsynced.
        No temp name to make and unlink (a dead upload leaves no file behind, the
        filesystem frees it): per shard two syscalls and a random name fewer, and in the
        journal no `tmp/` entry made and removed. None (nothing done) when the filesystem
        or /proc cannot do it: the caller writes a named temp file instead."""
        self._check_body(parts, expect_digest)
        parent = os.path.dirname(self.path)
        self._store._make_dirs(parent)
        result = -1
        dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600,
                             dir_fd=dfd)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
                self._store.unnamed_temp = False
                return None
            try:
                writev_all(fd, parts)
                os.fsync(fd)
                try:  # linkat(..., AT_SYMLINK_FOLLOW): dst_dir_fd makes os.link use it
                    os.link(f"/proc/self/fd/{fd}", os.path.basename(self.path),
                            dst_dir_fd=dfd)
                except FileExistsError:
                    if not _same_file(f"/proc/self/fd/{fd}", self.path):
                        raise ShardExists(self.shard_id) from None
                    result = UNCHANGED  # a racing first writer may not have made its
                    # entry durable yet: the directory fsync below covers it before our 201
                except FileNotFoundError:
                    if os.path.isdir("/proc/self/fd"):
                        raise
                    self._store.unnamed_temp = False  # no /proc: named temp files
                    return None
                except OSError as exc:  # a sandbox or FUSE refusing the /proc link
                    if exc.errno not in _NO_LINK:
                        raise
                    self._store.unnamed_temp = False
                    return None
            finally:
                os.close(fd)
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return result

    def _commit_sync(self, fd: int, replace: bool) -> int:
        """fsync, move into place, fsync the directory; see `install_new` for the result.

        The directory is fsynced also when an identical shard was there already: a racing
        first writer (a sender's retry races its own first attempt) may have linked it
        without its directory fsync yet, and our 201 must not come before that entry is
        durable. A direct-written data shard is read back into the page cache (`warm`)
        only once it is installed and durable. An id a pack holds follows the store's one
        whole-shard commit rule (`DiskShardStore.decide_over_packed_sync`, then
        `supersede_packed_sync` for a rewrite, before it is acknowledged)."""
        packed = self._store.packed_copy(self.shard_id)
        try:
            if packed is not None and not replace:
                decided = self._store.decide_over_packed_sync(
                    self.shard_id, lambda pfd, base, n: _same_range(self.tmp_path, pfd, base, n))
                if decided is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.tmp_path)
                    return decided
            os.fsync(fd)
            parent = os.path.dirname(self.path)
            self._store._make_dirs(parent)
            replaced = install_new(self.tmp_path, self.path, self.shard_id, replace)
            fsync_dir(parent)
            if packed is not None and replace:
                replaced = self._store.supersede_packed_sync(self.shard_id, packed, replaced)
            if replaced != UNCHANGED and self.warm and self._appender is not None:
                warm(fd)
        finally:
            os.close(fd)
        return replaced

    async def abort(self) -> None:
        """Drop the upload (idempotent; safe to call from a cancelled task)."""
        if self._done:
            return
        self._done = True
        await self._discard()

    async def _discard(self) -> None:
        self._done = True
        # Shielded: a cancelled caller leaves the discard to its thread (which may wait for
        # a write still in flight, `_io`) instead of blocking the event loop on it.
        await asyncio.shield(asyncio.ensure_future(asyncio.to_thread(self._discard_sync)))

    def _discard_sync(self) -> None:
        """Close and unlink, after any write in flight (idempotent)."""
        with self._io:
            fd, self._fd = self._fd, None
            appender, self._appender = self._appender, None
            if appender is not None:
                appender.release()
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)

    async def __aenter__(self) -> ShardWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.abort()


def stat_file(where: ShardLocation, sid: str) -> dict[str, int | float]:
    """Size, frame count, header fields, mtime and age of a shard (ShardCorrupt if its
    header is unusable, NotFound if it is absent). The age is this host's clock less the
    mtime (also this host's): no other host's clock enters it (the orphan sweep's grace)."""
    fd, where = open_location(where, sid)
    try:
        mtime = os.fstat(fd).st_mtime if where.mtime is None else where.mtime
        layout = open_layout(fd, sid, where.base, where.size)
    finally:
        os.close(fd)
    h = layout.header
    return {"size": layout.size, "segments": layout.segments, "k": h.k, "m": h.m,
            "index": h.index, "segment_size": h.segment_size, "block_size": h.block_size,
            "mtime": mtime, "age_s": time.time() - mtime}


class FrameCheck(NamedTuple):
    """What `verify_file` found: the frames that fail, and which file it read."""

    bad: list[int]
    file: tuple[int, ...]


def verify_file(where: ShardLocation, sid: str) -> FrameCheck:
    """The frames that fail their checks, read about a MiB at a time and checked in place
    (ShardCorrupt if the header fails, NotFound if the file is absent)."""
    fd, where = open_location(where, sid)
    try:
        layout = open_layout(fd, sid, where.base, where.size)
        per_chunk = max(1, CHUNK_BYTES // layout.frame_bytes)
        bad: list[int] = []
        seg = 0
        while seg < layout.segments:
            n = min(per_chunk, layout.segments - seg)
            start = layout.header.frame_offset(seg)
            buf = read_exact(fd, layout.frame_end(seg + n - 1) - start, where.base + start)
            for s in range(seg, seg + n):
                off = layout.header.frame_offset(s) - start
                if layout.frame_end(s) - start > len(buf) or \
                        frame_error(layout, s, buf, off) is not None:
                    bad.append(s)
            seg += n
        return FrameCheck(bad, file_identity(fd, where.base))
    finally:
        os.close(fd)
