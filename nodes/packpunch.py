"""Hole punching (packs): the blocks of dead records in a pack given back to the file system
with fallocate(PUNCH_HOLE | KEEP_SIZE), without copying the live records around them.

Why: compaction frees a pack's space only by copying its live records forward, and only once
the pack is below `compact_ratio` live; a pack at 60 % live keeps its 40 % dead bytes, and a
full disk must first find room for the copies. Punching frees a dead PUT's body in place.

What is punched: the whole file-system blocks inside the BODY of a PUT record a later durable
record of its id supersedes (the index names a later one, or none: a tombstone), never one a
restart's scan would index again (a failed group's records whose cut-back failed): its head
and trailer stay, so a restart's scan and a footer still see a complete record (the later
record still wins by order) and the punched zeros are never taken for damage; tombstones and
footers are never touched. The committer does it between groups (`PackStore.punch`, run by
the node's compactor after a compaction run that ends or finds the disk full; the packs
compaction drops need no punching), so the index cannot change under the liveness check: a
live record is never punched. A pack is punched a step at a time (STEP_RECORDS bodies,
STEP_BYTES or STEP_LOOKED records looked at), at the compactor's pace, so PUTs and DELETEs go between its steps; a body
already a hole is skipped. A read that located a record that died just before the punch
meets zeros and never passes them on as the shard: the node's frame check refuses them, and
as the record is no longer the shard's (`DiskShardStore.record_died`) the node opens the
shard where it is now (or answers 404) instead of a 409, and counts no checksum failure nor
quarantines; mid-stream it cuts the body short and the gateway reads another shard. Where
the node sends the bytes unchecked for the gateway's reader checks, the gateway's frame
check refuses them (counted there). A restart never indexes a punched record
(`body_punched`): when the newer record of its id is lost (its pack gone, its trailer rotted), the shard is
missing (repair rebuilds it), not its zeros served as a corrupt shard. A file system without
PUNCH_HOLE (EOPNOTSUPP) turns punching off: compaction only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from bisect import bisect_right
from collections.abc import Generator
from typing import TYPE_CHECKING

from nodes import packformat as pf
from nodes.packsteps import STEP_BYTES, StepJob, queue_job

if TYPE_CHECKING:
    from nodes.packindex import PackIndex

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
PUNCH_MIN = 1024 * 1024  # dead bytes a pack gains before it is punched again
STEP_RECORDS = 64  # bodies a punch step punches at most (then the groups queued go first)
STEP_LOOKED = 1024  # records looked at (live ones included) per step, at most (review21k F1)
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_fallocate = getattr(_libc, "fallocate64", None) or getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate [offset, offset+length) of `fd`, its size kept (OSError on failure)."""
    if _fallocate is None:
        raise OSError(errno.ENOSYS, "fallocate is not available")
    if _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def inner_blocks(start: int, end: int, block: int) -> tuple[int, int] | None:
    """The whole `block`-aligned range inside [start, end), or None when there is none."""
    lo = -(-start // block) * block
    hi = end // block * block
    return (lo, hi) if hi > lo else None


class PackPunching:
    """`PackStore`'s hole punching (a base class, as `PackCompaction`: it works on the
    store's own index, fds and packs, on its committer thread)."""

    index: PackIndex
    live: dict[int, int]
    sizes: dict[int, int]
    _active: int
    _active_recs: list[pf.Record]  # the active pack's records, in order (no scan needed)
    _jobs: list[StepJob]
    _cond: threading.Condition
    _closing: bool
    punch_off: bool  # the file system cannot punch holes: compaction only
    holes: dict[int, int]  # seq -> bytes its punched holes give back (st_blocks measured)
    punched: int  # bytes punching gave back (st_blocks before and after; cumulative)
    _punched_dead: dict[int, int]  # seq -> its dead bytes when last punched
    _unsure: dict[int, int]  # seq -> where its failed, never indexed group began

    if TYPE_CHECKING:
        def _fd(self, seq: int) -> int: ...
        def _records(self, seq: int) -> tuple[list[pf.Record], list[tuple[int, int]]]: ...
        def _hook(self, point: str, seq: int) -> None: ...

    async def punch(self, min_dead: int | None = None, pace: float | None = None) -> int:
        """Punch the dead bodies of every pack that gained `min_dead` (PUNCH_MIN) dead bytes
        since it was last punched (in the committer, between groups, a step at a time, `pace`
        bytes punched per second at most); the bytes given back. The active pack too: a node
        that never writes `seal_bytes` (256 MiB) would otherwise never get the space of its
        deletes back; its records are all complete between groups, and those of a failed
        group are never in it (cut back, or the pack retired and `_unsure` marks them)."""
        min_dead = PUNCH_MIN if min_dead is None else min_dead
        return await queue_job(self, self._punching(min_dead), pace)

    def _punching(self, min_dead: int) -> Generator[int, None, int]:
        total = 0
        for seq in sorted(self.sizes):
            if self.punch_off:
                break
            dead = self.sizes.get(seq, 0) - self.live.get(seq, 0)
            if dead - self._punched_dead.get(seq, 0) < min_dead:
                continue
            total += yield from self._punch_pack(seq)
        return total

    def _superseded(self, seq: int, rec: pf.Record) -> bool:
        """Whether a later durable record of its id supersedes PUT `rec` of pack `seq`, so
        no restart can index it again: the index names a later record of the id, or none
        (a later tombstone). An unindexed record of a failed group whose cut-back failed is
        not: never acknowledged, yet a restart's scan applies it, the newest of its id
        (review21f F1), so it is punched only once a later record of its id is indexed."""
        loc = self.index.get(rec.shard_id)
        if loc is not None:
            return (loc.seq, loc.offset) > (seq, rec.body_offset)
        return rec.offset < self._unsure.get(seq, self.sizes[seq] + 1)

    def _punch_pack(self, seq: int) -> Generator[int, None, int]:
        """Punch pack `seq`'s dead PUT bodies, STEP_RECORDS or STEP_BYTES at a time (each
        step yields the bytes it punched: the groups queued go between, review21f F3); the
        bytes the file system got back. A body already a hole is skipped (a re-punch costs
        one lseek a record, and is not paced)."""
        before = os.fstat(self._fd(seq))
        block = before.st_blksize or 4096
        dead = self.sizes[seq] - self.live.get(seq, 0)  # what dies from now on: next time
        recs = list(self._active_recs) if seq == self._active else self._records(seq)[0]
        count = size = looked = 0
        for rec in recs:
            looked += 1  # every record looked at counts toward a step, punched or not
            # (review21k F1: a pass over a big active pack with little to punch was one step)
            if rec.kind == pf.PUT and self._superseded(seq, rec):  # else live, or what a
                # restart's scan would make live: never
                span = inner_blocks(rec.body_offset, rec.body_offset + rec.body_len, block)
                if span is not None:
                    fd = self._fd(seq)  # (the groups between steps may have closed the last)
                    if _is_hole(fd, *span):  # punched before (every pack after a restart):
                        count += 1  # an lseek, still counted, or a pass over all is one step
                    else:
                        try:
                            punch_hole(fd, span[0], span[1] - span[0])
                        except OSError as exc:
                            if exc.errno in _UNSUPPORTED:
                                self.punch_off = True  # this file system cannot: compaction
                                break
                            raise
                        count, size = count + 1, size + span[1] - span[0]
            if count >= STEP_RECORDS or size >= STEP_BYTES or looked >= STEP_LOOKED:
                yield size
                count = size = looked = 0
        if size or count or looked:  # a step a pack at least, as before steps within one
            yield size
        self._hook("punched", seq)
        st = os.fstat(self._fd(seq))
        self.holes[seq] = max(0, self.sizes[seq] - st.st_blocks * 512)
        self._punched_dead[seq] = dead
        freed = max(0, (before.st_blocks - st.st_blocks) * 512)
        self.punched += freed
        return freed


def _is_hole(fd: int, lo: int, hi: int) -> bool:
    """Whether [lo, hi) of `fd` holds no data (punched before); False when unsure."""
    try:
        return os.lseek(fd, lo, os.SEEK_DATA) >= hi
    except OSError as exc:
        return exc.errno == errno.ENXIO  # no data from `lo` to the end


def hole_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """The holes [lo, hi) of `fd` below `size`, in order: a walk of SEEK_HOLE/SEEK_DATA, a
    few syscalls a pack rather than one a record ([] when the file system cannot tell)."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
        except OSError:
            return out
        if hole >= size:
            break
        try:
            data = os.lseek(fd, hole, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                return out
            data = size  # a hole to the end
        out.append((hole, min(data, size)))
        pos = data
    return out


def body_punched(holes: list[tuple[int, int]], rec: pf.Record, block: int) -> bool:
    """Whether PUT `rec`'s body meets a hole (`hole_ranges`): punched, so gone. A body
    written is never sparse (packs are appended in order), so a hole in one means its
    blocks were given back: never to be read as the shard again."""
    span = inner_blocks(rec.body_offset, rec.body_offset + rec.body_len, block)
    if span is None or not holes:
        return False
    i = bisect_right(holes, (span[1],))  # the holes starting before the span's end
    return i > 0 and holes[i - 1][1] > span[0]
