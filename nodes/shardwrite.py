"""One shard file's durable write (`ShardWriter`): a temp file (or an unnamed O_TMPFILE one)
fed by the PUT's body, then fsync, a rename or link under its name and a directory fsync
before the PUT is acknowledged; a packed shard goes to the disk's packs instead. The file's
id, layout and frame check are `nodes.shardfile`'s, its range read `nodes.shardread`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodes.directio import DirectAppender, warm
from nodes.shardfile import (
    CHUNK_BYTES,
    UNCHANGED,
    ShardExists,
    fsync_dir,
    in_thread,
    install_new,
    read_exact,
    same_file,
    write_all,
    writev_all,
)
from storage.errors import IntegrityError

if TYPE_CHECKING:
    from nodes.disk import DiskShardStore

_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}  # O_TMPFILE not supported
_NO_LINK = {errno.EPERM, errno.EACCES, errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL}  # nor its link


class BodyMismatch(IntegrityError):
    """The bytes received are not the ones the request's body MAC covers."""


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
                    if not same_file(f"/proc/self/fd/{fd}", self.path):
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
