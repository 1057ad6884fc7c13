"""A node's local shard storage: one file per shard, written durably, read and verified in pieces.

Layout below the node's data directory:

    shards/<id[0:2]>/<id[2:4]>/<id>      committed shard files (format v1, see `format`)
    tmp/<id>.<random>.tmp                 uploads in progress; older than an hour: removed at start
    quarantine/<id>.<ns>[.json]           corrupt shards moved aside, with a JSON reason sidecar

A shard is written to a temp file, fsynced, renamed into place and its directory fsynced (new
fan-out directories are made durable in their parent the first time). Every blocking call runs
in a worker thread; no call holds more than about 1 MiB plus one frame in memory. Because every
frame but the last holds exactly `block_size` bytes, frame i sits at `header.frame_offset(i)`:
a range read seeks straight to it, and a damaged length field spoils one frame, not the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    InvalidRange,
    NotFound,
    ShardCorrupt,
)
from storage.filemodes import secure_tree, tighten
from storage.shards.format import (
    FRAME_HEAD,
    FRAME_HEAD_BYTES,
    HEADER_BYTES,
    ShardHeader,
    frame_checksum,
)
from storage.shards.ids import parse_shard_id, relative_path, shard_id

CHUNK_BYTES = 1024 * 1024
TEMP_MAX_AGE_S = 3600.0
UNCHANGED = -2  # commit outcome: an identical shard was already stored under the id


class ShardExists(Conflict):
    """A shard with other bytes is committed under this id and the PUT was not a rewrite."""

    def __init__(self, sid: str) -> None:
        super().__init__(f"shard {sid} exists with other content")
        self.shard_id = sid


class BodyMismatch(IntegrityError):
    """The bytes received are not the ones the request's body MAC covers."""


def _same_file(a: Path, b: Path) -> bool:
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


def install_new(tmp: Path, path: Path, sid: str, replace: bool) -> int:
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


def _frame_error(layout: Layout, segment: int, buf: bytes | memoryview, off: int) -> str | None:
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


def _read_exact(fd: int, n: int, offset: int) -> bytes:
    parts: list[bytes] = []
    while n > 0:
        b = os.pread(fd, n, offset)
        if not b:
            break
        parts.append(b)
        n -= len(b)
        offset += len(b)
    return b"".join(parts)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _writev_all(fd: int, parts: list[bytes | memoryview]) -> None:
    """os.writev of every part, resuming after short writes (at most IOV_MAX at a time)."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        n = os.writev(fd, views[:512])
        while n and views:
            if n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][n:]
                n = 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_layout(fd: int, sid: str) -> Layout:
    """Read and check the header of an open shard file (ShardCorrupt when unusable)."""
    size = os.fstat(fd).st_size
    raw = _read_exact(fd, HEADER_BYTES, 0)
    try:
        header = ShardHeader.unpack(raw)
    except IntegrityError as exc:
        raise ShardCorrupt(sid, f"header: {exc}") from None
    stripe, index = parse_shard_id(sid)
    if header.stripe_id != stripe or header.index != index:
        raise ShardCorrupt(sid, "header names another shard")
    if header.block_size == 0:
        raise ShardCorrupt(sid, "header has block size 0")
    return Layout(header, size)


class ShardWriter:
    """One upload in progress: a temp file that becomes the shard on `commit`."""

    def __init__(self, store: DiskShardStore, sid: str, tmp_path: Path, fd: int | None) -> None:
        self.shard_id = sid
        self.digest: Any = None  # a hash fed every byte written, in the writer thread
        self.tmp_path = tmp_path
        self.path = store.path_of(sid)
        self.bytes_written = 0
        self._store = store
        self._fd: int | None = fd
        self._done = False

    def _open_sync(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                               | getattr(os, "O_CLOEXEC", 0), 0o600)
        return self._fd

    def _write_sync(self, data: bytes | bytearray | memoryview) -> None:
        if self.digest is not None:
            self.digest.update(data)  # same pass as the write, off the event loop
        _write_all(self._open_sync(), data)

    def _write_many_sync(self, parts: list[bytes | memoryview]) -> None:
        fd = self._open_sync()
        if self.digest is not None:
            for p in parts:
                self.digest.update(p)
        _writev_all(fd, parts)

    async def write_many(self, parts: list[bytes | memoryview]) -> None:
        """Append `parts` in one thread call (one writev), no joining copy."""
        if self._done:
            raise RuntimeError("shard writer is closed")
        n = sum(len(p) for p in parts)
        if not n:
            return
        await asyncio.to_thread(self._write_many_sync, parts)
        self.bytes_written += n

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

        def _finish() -> int:
            if tail_bytes:
                self._write_many_sync(parts)
            fd, self._fd = self._open_sync(), None
            if expect_digest is not None and (self.digest is None or not hmac.compare_digest(
                    self.digest.digest(), expect_digest)):
                os.close(fd)
                raise BodyMismatch("body does not match its signed MAC")
            return self._commit_sync(fd, replace)

        try:
            replaced = await asyncio.to_thread(_finish)
        except BaseException:
            await self._discard()
            raise
        self.bytes_written += tail_bytes
        self._done = True
        if replaced == UNCHANGED:
            pass
        elif replaced >= 0:
            self._store._account(self.bytes_written - replaced, 0)
        else:
            self._store._account(self.bytes_written, 1)
        return self.bytes_written

    def _commit_sync(self, fd: int, replace: bool) -> int:
        """fsync, move into place, fsync the directory; see `install_new` for the result."""
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._store._make_dirs(self.path.parent)
        replaced = install_new(self.tmp_path, self.path, self.shard_id, replace)
        if replaced != UNCHANGED:
            _fsync_dir(self.path.parent)
        return replaced

    async def abort(self) -> None:
        """Drop the upload (idempotent; safe to call from a cancelled task)."""
        if self._done:
            return
        self._done = True
        await self._discard()

    async def _discard(self) -> None:
        fd, self._fd = self._fd, None
        self._done = True
        try:
            await asyncio.to_thread(self._discard_sync, fd)
        except asyncio.CancelledError:
            self._discard_sync(fd)
            raise

    def _discard_sync(self, fd: int | None) -> None:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)

    async def __aenter__(self) -> ShardWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.abort()


class ShardReadStream:
    """Async iterator over a shard: its header bytes, then whole, verified frames in pieces.

    Nothing touches the disk until the first `__anext__`, which raises NotFound or
    ShardCorrupt (bad header) or InvalidRange (`first` past the last frame). After it,
    `header`, `segments`, `size` and `body_bytes` (bytes this stream yields in all) are set.
    A frame that fails its checksum raises ShardCorrupt before any of its bytes is yielded;
    the frames before it in the same piece are yielded first.
    """

    def __init__(self, sid: str, path: Path, first: int, count: int | None) -> None:
        if first < 0 or (count is not None and count < 0):
            raise InvalidInput("first and count must be non-negative")
        self.shard_id = sid
        self.header: ShardHeader | None = None
        self.segments = 0
        self.size = 0
        self.body_bytes = 0
        self.first = first
        self.end = first
        self._path = path
        self._count = count
        self._fd: int | None = None
        self._layout: Layout | None = None
        self._next = first
        self._pending_error: ShardCorrupt | None = None
        self._finished = False

    def __aiter__(self) -> ShardReadStream:
        return self

    async def __anext__(self) -> bytes:
        if self._finished:
            raise StopAsyncIteration
        if self._layout is None:
            try:
                return await asyncio.to_thread(self._open_sync)
            except BaseException:
                await self.aclose()
                raise
        if self._pending_error is not None:
            err, self._pending_error = self._pending_error, None
            await self.aclose()
            raise err
        if self._next >= self.end:
            await self.aclose()
            raise StopAsyncIteration
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

    def _open_sync(self) -> bytes:
        try:
            self._fd = os.open(self._path, os.O_RDONLY)
        except FileNotFoundError:
            raise NotFound(f"shard {self.shard_id} not found") from None
        layout = _open_layout(self._fd, self.shard_id)
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

    def _read_sync(self) -> tuple[bytes, ShardCorrupt | None]:
        layout = self._layout
        assert layout is not None and self._fd is not None
        n = max(1, min(self.end - self._next, CHUNK_BYTES // layout.frame_bytes))
        start = layout.header.frame_offset(self._next)
        want = layout.frame_end(self._next + n - 1) - start
        buf = _read_exact(self._fd, want, start)
        good = 0
        err: ShardCorrupt | None = None
        for seg in range(self._next, self._next + n):
            off = layout.header.frame_offset(seg) - start
            end = layout.frame_end(seg) - start
            if end > len(buf):
                err = ShardCorrupt(self.shard_id, f"segment {seg}: file shrank while reading")
                break
            problem = _frame_error(layout, seg, buf, off)
            if problem is not None:
                err = ShardCorrupt(self.shard_id, problem)
                break
            good = end
        self._next += n
        return (buf if good == len(buf) else buf[:good]), err

    async def aclose(self) -> None:
        self._finished = True
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    async def __aenter__(self) -> ShardReadStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class DiskShardStore:
    """The shard files of one node, below `root`."""

    def __init__(self, root: Path, temp_max_age_s: float = TEMP_MAX_AGE_S) -> None:
        self.root = Path(root)
        self.shard_dir = self.root / "shards"
        self.tmp_dir = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"
        self._temp_max_age_s = temp_max_age_s
        self._durable_dirs: set[str] = set()  # str: hashing a Path costs ~10x more
        self._used_bytes = 0
        self._shards = 0
        self._counted = False
        for d in (self.root, self.shard_dir, self.tmp_dir, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- paths and bookkeeping ---------------------------------------------------------

    def path_of(self, sid: str) -> Path:
        check_shard_id(sid)
        return self.shard_dir / relative_path(sid)

    def _make_dirs(self, leaf: Path) -> None:
        """Create the fan-out directories of `leaf`, fsyncing a parent once per new child."""
        if str(leaf) in self._durable_dirs:  # its parent was made durable before it
            return
        for d in (leaf.parent, leaf):
            if str(d) in self._durable_dirs:
                continue
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                pass
            _fsync_dir(d.parent)
            self._durable_dirs.add(str(d))

    def _account(self, delta_bytes: int, delta_shards: int) -> None:
        self._used_bytes += delta_bytes
        self._shards += delta_shards

    async def start(self) -> None:
        """Remove stale temp files, make every file private (0600, directories 0700, in
        data dirs made before that rule too) and count what is stored (once, before serving)."""
        await asyncio.to_thread(secure_tree, self.root, [self.shard_dir])  # shards: in _count
        await asyncio.to_thread(self._clean_temp_sync, self._temp_max_age_s)
        await self._count()

    async def clean_temp(self, max_age_s: float = TEMP_MAX_AGE_S) -> int:
        return await asyncio.to_thread(self._clean_temp_sync, max_age_s)

    def _clean_temp_sync(self, max_age_s: float) -> int:
        cutoff = time.time() - max_age_s
        removed = 0
        with os.scandir(self.tmp_dir) as it:
            for entry in it:
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file(follow_symlinks=False) and \
                            entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
        return removed

    async def _count(self) -> None:
        used, count = await asyncio.to_thread(self._count_sync)
        self._used_bytes, self._shards, self._counted = used, count, True

    def _count_sync(self) -> tuple[int, int]:
        used = count = 0
        for dirpath, _dirs, files in os.walk(self.shard_dir):
            with contextlib.suppress(FileNotFoundError):
                tighten(dirpath, os.stat(dirpath))
            for name in files:
                path = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    st = os.lstat(path)
                    tighten(path, st)  # the walk that counts also keeps shards private
                    if _valid(name):
                        used += st.st_size
                        count += 1
        return used, count

    # -- writing -------------------------------------------------------------------------

    async def begin_put(self, sid: str) -> ShardWriter:
        """Start an upload; the temp file is created with the first write (one thread hop
        for a small shard: open, write, fsync, rename and directory fsync together)."""
        check_shard_id(sid)
        tmp = self.tmp_dir / f"{sid}.{secrets.token_hex(6)}.tmp"
        return ShardWriter(self, sid, tmp, None)

    # -- reading -------------------------------------------------------------------------

    def open_read(self, sid: str, first: int = 0, count: int | None = None) -> ShardReadStream:
        """Header bytes, then frames [first, first+count) verified; see ShardReadStream."""
        return ShardReadStream(sid, self.path_of(sid), first, count)

    async def stat(self, sid: str) -> dict[str, int | float]:
        path = self.path_of(sid)
        return await asyncio.to_thread(self._stat_sync, sid, path)

    def stat_sync(self, sid: str) -> dict[str, int | float]:
        """`stat` without the thread hop, for callers already on a worker thread."""
        return self._stat_sync(sid, self.path_of(sid))

    def _stat_sync(self, sid: str, path: Path) -> dict[str, int | float]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise NotFound(f"shard {sid} not found") from None
        try:
            st = os.fstat(fd)
            layout = _open_layout(fd, sid)
        finally:
            os.close(fd)
        h = layout.header
        return {"size": layout.size, "segments": layout.segments, "k": h.k, "m": h.m,
                "index": h.index, "segment_size": h.segment_size, "block_size": h.block_size,
                "mtime": st.st_mtime}

    async def verify(self, sid: str) -> list[int]:
        """Indexes of the frames that fail their checks (ShardCorrupt if the header does)."""
        path = self.path_of(sid)
        return await asyncio.to_thread(self._verify_sync, sid, path)

    def _verify_sync(self, sid: str, path: Path) -> list[int]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise NotFound(f"shard {sid} not found") from None
        try:
            layout = _open_layout(fd, sid)
            per_chunk = max(1, CHUNK_BYTES // layout.frame_bytes)
            bad: list[int] = []
            seg = 0
            while seg < layout.segments:
                n = min(per_chunk, layout.segments - seg)
                start = layout.header.frame_offset(seg)
                buf = _read_exact(fd, layout.frame_end(seg + n - 1) - start, start)
                for s in range(seg, seg + n):
                    off = layout.header.frame_offset(s) - start
                    if layout.frame_end(s) - start > len(buf) or \
                            _frame_error(layout, s, buf, off) is not None:
                        bad.append(s)
                seg += n
            return bad
        finally:
            os.close(fd)

    # -- listing and removal -----------------------------------------------------------

    async def list(self, after: str = "", limit: int = 1000) -> list[str]:
        """Sorted shard ids greater than `after`, at most `limit` of them."""
        if limit <= 0:
            return []
        return await asyncio.to_thread(self._list_sync, after, limit)

    def _list_sync(self, after: str, limit: int) -> list[str]:
        out: list[str] = []

        def subdirs(d: Path, prefix: str) -> list[str]:
            try:
                names = sorted(n for n in os.listdir(d) if len(n) == 2)
            except FileNotFoundError:
                return []
            keep = len(prefix) + 2
            return [n for n in names if prefix + n >= after[:keep]]

        for d1 in subdirs(self.shard_dir, ""):
            for d2 in subdirs(self.shard_dir / d1, d1):
                try:
                    names = sorted(os.listdir(self.shard_dir / d1 / d2))
                except FileNotFoundError:
                    continue
                for name in names:
                    if name > after and name.startswith(d1 + d2) and _valid(name):
                        out.append(name)
                        if len(out) >= limit:
                            return out
        return out

    async def delete(self, sid: str) -> bool:
        """Remove a shard; False when it was not there (not fsynced: a revived delete is
        harmless, garbage collection repeats it)."""
        path = self.path_of(sid)
        size = await asyncio.to_thread(self._unlink_sync, path)
        if size < 0:
            return False
        self._account(-size, -1)
        return True

    @staticmethod
    def _unlink_sync(path: Path) -> int:
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return -1
        return size

    async def quarantine(self, sid: str, reason: str) -> Path | None:
        """Move a shard aside with a JSON sidecar; return its new path (None if absent)."""
        path = self.path_of(sid)
        moved = await asyncio.to_thread(self._quarantine_sync, sid, path, reason)
        if moved is not None:
            self._account(-moved[1], -1)
            return moved[0]
        return None

    def _quarantine_sync(self, sid: str, path: Path, reason: str) -> tuple[Path, int] | None:
        now = time.time()
        dest = self.quarantine_dir / f"{sid}.{time.time_ns()}"
        try:
            size = os.stat(path).st_size
            os.replace(path, dest)
        except FileNotFoundError:
            return None
        side = {"shard_id": sid, "reason": reason[:2000], "time": now,
                "time_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                "size": size, "from": str(path.relative_to(self.root))}
        sidecar = dest.with_name(dest.name + ".json")
        fd = os.open(sidecar, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, json.dumps(side, sort_keys=True).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.quarantine_dir)
        _fsync_dir(path.parent)
        return dest, size

    async def quarantined(self) -> list[dict[str, object]]:
        """The sidecars of quarantined shards (for operators and tests)."""
        def read() -> list[dict[str, object]]:
            out = []
            for p in sorted(self.quarantine_dir.glob("*.json")):
                with contextlib.suppress(OSError, ValueError):
                    out.append(json.loads(p.read_text()))
            return out
        return await asyncio.to_thread(read)

    async def usage(self) -> dict[str, int]:
        if not self._counted:
            await self._count()
        st = await asyncio.to_thread(os.statvfs, self.root)
        return {"used_bytes": self._used_bytes, "shards": self._shards,
                "free_bytes": st.f_bavail * st.f_frsize, "total_bytes": st.f_blocks * st.f_frsize}


def _valid(name: str) -> bool:
    try:
        check_shard_id(name)
    except InvalidInput:
        return False
    return True


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


__all__ = ["UNCHANGED", "BodyMismatch", "DiskShardStore", "ShardExists", "ShardReadStream",
           "ShardWriter", "check_shard_id", "install_new", "is_disk_full"]
