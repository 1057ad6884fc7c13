"""One shard file: its id, its layout (frame i at `header.frame_offset(i)`), the file
installed under its name (`install_new`), the disk I/O helpers its writers and readers
share, its location and the in-place check of its frames. Its durable write is
`nodes.shardwrite.ShardWriter`, its range read `nodes.shardread.ShardReadStream`; the
directory of shard files is `nodes.disk.DiskShardStore`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

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

CHUNK_BYTES = 1024 * 1024
T = TypeVar("T")
UNCHANGED = -2  # commit outcome: an identical shard was already stored under the id



def in_thread(fn: Callable[[], T]) -> Awaitable[T]:
    """Run `fn` on the loop's default worker pool: `asyncio.to_thread` without its copy of
    the context (nothing below reads context variables), one hop a request for small shards."""
    return asyncio.get_running_loop().run_in_executor(None, fn)


class ShardExists(Conflict):
    """A shard with other bytes is committed under this id and the PUT was not a rewrite."""

    def __init__(self, sid: str) -> None:
        super().__init__(f"shard {sid} exists with other content")
        self.shard_id = sid


def same_file(a: Path | str, b: Path | str) -> bool:
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
        same = same_file(tmp, path)
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
