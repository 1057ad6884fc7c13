"""Pack compaction's steps, run by a `PackStore`'s committer thread between groups.

A sealed pack whose live bytes fall below `compact_ratio` of its size is copied forward by
the committer itself, between groups, a step (`STEP_BYTES`) at a time: its live records
(original write time kept) and the tombstones still needed are appended to the active pack
and made durable by the same fdatasync as any group, only then does the index move; when
none of the pack is live any more it is recorded as dropped (`nodes.packdrops`), unlinked
and its directory fsynced. A tombstone for X is carried while X is not indexed and a pack
older than the compacted one exists (it may hold a PUT of X that would otherwise return at
a restart). Each step is one durable group, so a crash between any two steps leaves the
old records or their durable copies, never neither; the newer copy wins a restart's scan by
order. Damaged ranges no index names (a scan's gaps and bad records) are copied to
`quarantine/` before their pack is unlinked; a failed disk call fails the run, and the next run resumes. Candidates go
emptiest first; on a full disk one that does not fit in free space plus the reserve
(`nodes.packreserve`) is skipped and one whose copy meets ENOSPC left, the rest still go.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from nodes import packformat as pf
from nodes.packrecovery import Damage, keep_aside
from nodes.packreserve import is_disk_full
from nodes.shardfile import fsync_dir, read_exact

if TYPE_CHECKING:
    from nodes.packdrops import Drops
    from nodes.packindex import PackIndex
    from nodes.packreserve import Reserve

STEP_BYTES = 4 * 1024 * 1024  # bytes a compaction step copies (then the PUTs queued go first)


@dataclass
class StepJob:
    """Committer work done in steps between groups (compaction): `steps` yields after each
    step and returns its answer; `pace` bytes/s keeps a background job's disk share small."""

    steps: Generator[int, None, int]
    future: concurrent.futures.Future[int]
    pace: float | None = None
    not_before: float = 0.0
    started: bool = False


class JobQueue(Protocol):
    """The committer's job queue on `PackStore` (what `queue_job` uses)."""

    _jobs: list[StepJob]
    _cond: threading.Condition
    _closing: bool


async def queue_job(store: JobQueue, steps: Generator[int, None, int],
                    pace: float | None) -> int:
    """Queue `steps` for the committer (run between groups, `pace` bytes/s at most) and
    wait for its answer: compaction's and punching's one way in."""
    fut: concurrent.futures.Future[int] = concurrent.futures.Future()
    with store._cond:
        if store._closing:
            steps.close()
            raise RuntimeError("pack store is closed")
        store._jobs.append(StepJob(steps, fut, pace))
        store._cond.notify()
    return await asyncio.wrap_future(fut)


class PackCompaction:
    """`PackStore`'s compaction (a base class: the steps work on the store's own index,
    fds and packs, on its committer thread). `compact` queues a run as a `StepJob`."""

    # the store's state these steps read and change (`PackStore.__init__` sets it)
    index: PackIndex
    live: dict[int, int]
    sizes: dict[int, int]
    damage: list[Damage]
    compact_ratio: float
    compacted: int
    skipped: int
    pack_dir: Path
    quarantine_dir: Path
    _active: int
    _active_of_last: int
    _unlinked: set[int]
    _retired: set[int]
    _unsure: dict[int, int]
    _fds: OrderedDict[int, int]
    _fd_lock: threading.Lock
    _jobs: list[StepJob]
    _cond: threading.Condition
    _closing: bool
    reserve: Reserve
    drops: Drops
    holes: dict[int, int]
    _punched_dead: dict[int, int]

    if TYPE_CHECKING:  # the store's own steps these use
        def _fd(self, seq: int) -> int: ...
        def _apply(self, seq: int, rec: pf.Record) -> None: ...
        def _hook(self, point: str, seq: int) -> None: ...
        def _forget_damage(self, seq: int) -> None: ...
        def path_of(self, seq: int) -> Path: ...
        def _append(self, items: list[tuple[int, bytes, int, int, list[bytes | memoryview]]],
                    reclaim: bool = False) -> list[pf.Record]: ...

    async def compact(self, pace: float | None = None, max_packs: int | None = None) -> int:
        """Compact the sealed packs below `compact_ratio` live (at most `max_packs`) in the
        committer, between groups, `pace` bytes/s at most; the bytes copied forward."""
        return await queue_job(self, self._compaction(max_packs), pace)

    def candidates(self) -> list[int]:
        """Sealed packs (not the active one) whose live bytes are below the ratio, emptiest
        first: on a full disk the packs that cost least to copy give their space back first."""
        return sorted((seq for seq, size in list(self.sizes.items()) if seq != self._active
                       and (self.live.get(seq, 0) == 0
                            or self.live.get(seq, 0) < self.compact_ratio * size)),
                      key=lambda seq: (self.live.get(seq, 0), seq))

    def _job_wait(self) -> float | None:
        """Seconds until the first job may take its next step (None: no job)."""
        if not self._jobs:
            return None
        return self._jobs[0].not_before - time.monotonic()

    def _job_step(self) -> None:
        if not self._jobs:
            return
        job = self._jobs[0]
        if not job.started:
            job.started = True
            if not job.future.set_running_or_notify_cancel():
                with self._cond:
                    self._jobs.pop(0)  # its caller gave up before it began
                return
        done: int | BaseException | None = None
        try:
            n = next(job.steps)
        except StopIteration as stop:
            done = stop.value
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            done = exc
        else:
            if job.pace:
                job.not_before = time.monotonic() + n / job.pace
        if done is None:
            return
        with self._cond:
            self._jobs.pop(0)
        if isinstance(done, BaseException):
            job.future.set_exception(done)
        else:
            job.future.set_result(done)

    def _compaction(self, max_packs: int | None) -> Generator[int, None, int]:
        """Copy each candidate's needed records forward a step at a time, then unlink it
        (a step yields the bytes it copied; the total is returned). A candidate whose needed
        records do not fit in free space plus the reserve is skipped, and one whose copy
        finds the disk full is left for the next run: the others (an emptier pack costs
        nothing to drop) still go. The first such failure is raised at the end."""
        copied = 0
        failed: OSError | None = None
        self._sync_unlinks()  # a failed fsync of an earlier run's unlink, retried first
        for count, seq in enumerate(self.candidates()):
            if max_packs is not None and count >= max_packs:
                break
            if seq not in self.sizes or seq == self._active:
                continue
            recs, harm = self._records(seq)
            if sum(rec.body_len + pf.OVERHEAD for rec in recs
                   if self._needed(seq, rec)) > self._room():
                self.skipped += 1
                continue
            try:
                for size in self._copy_pack(seq, recs):
                    copied += size
                    yield size
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                failed = failed or exc
                continue
            for start, end in harm:  # damage no index names: kept, never silently dropped
                keep_aside(self.quarantine_dir, seq, self._fd(seq), start, end, "damaged")
            self._drop(seq)
            yield 0
        if failed is not None:
            raise failed
        return copied

    def _copy_pack(self, seq: int, recs: list[pf.Record]) -> Generator[int, None, None]:
        """Copy pack `seq`'s needed records forward, a step at a time (yields each size)."""
        i = 0
        while i < len(recs):
            step: list[pf.Record] = []
            size = 0
            while i < len(recs) and size < STEP_BYTES:
                rec = recs[i]
                i += 1
                if self._needed(seq, rec):
                    step.append(rec)
                    size += rec.body_len + pf.OVERHEAD
            if step:
                self._copy_forward(seq, step)
                yield size

    def _room(self) -> int:
        """Bytes compaction may write now: the file system's free space, and the reserve's
        while it is held (a copy that meets a full disk gives it up)."""
        st = os.statvfs(self.pack_dir)
        return st.f_bavail * st.f_frsize + self.reserve.held

    def _records(self, seq: int) -> tuple[list[pf.Record], list[tuple[int, int]]]:
        """A sealed pack's records in order (from its footer, else by a scan), and the
        byte ranges of its damage (a scan's gaps and bad records, and a restart's)."""
        fd = self._fd(seq)

        def read_at(off: int, n: int) -> bytes:
            return os.pread(fd, n, off)
        harm = {(a, b) for d in self.damage if d.seq == seq for a, b in d.gaps}
        harm |= {(r.offset, r.end) for d in self.damage if d.seq == seq for r in d.bad}
        listed = pf.read_footer(read_at, self.sizes[seq])
        if listed is None:
            got = pf.scan(read_at, self.sizes[seq])
            listed = [r for r in got.records if r.kind != pf.FOOTER]
            harm |= set(got.gaps) | {(r.offset, r.end) for r in got.bad}
        return listed, sorted(harm)

    def _needed(self, seq: int, rec: pf.Record) -> bool:
        """Whether compacting pack `seq` must copy `rec` forward: a PUT the index still
        points at, or a tombstone whose shard is not indexed while an older pack exists."""
        if rec.kind == pf.PUT:
            loc = self.index.get(rec.shard_id)
            return loc is not None and loc.seq == seq and loc.offset == rec.body_offset
        if rec.kind == pf.TOMBSTONE:
            return rec.shard_id not in self.index and any(
                s < seq for s in (*self.sizes, *self._unlinked))
        return False

    def _copy_forward(self, seq: int, recs: list[pf.Record]) -> None:
        fd = self._fd(seq)
        items = [(rec.kind, rec.stripe, rec.index, rec.time_ns,
                  [read_exact(fd, rec.body_len, rec.body_offset)] if rec.body_len else [])
                 for rec in recs]
        new = self._append(items, reclaim=True)  # on a full disk: from the reserve
        self._hook("copied", seq)
        for rec in new:
            self._apply(self._active_of_last, rec)

    def _drop(self, seq: int) -> None:
        """Unlink a pack compaction emptied (nothing in it is live or needed any more)."""
        self._hook("drop", seq)
        with self._fd_lock:
            fd = self._fds.pop(seq, None)
        if fd is not None:
            os.close(fd)
        try:
            self.drops.add(seq)  # durable first: a pack gone unrecorded is a lost one
        except OSError:  # no room even for that: its blocks go back, its (empty) name
            os.truncate(self.path_of(seq), 0)  # stays until a later run can record it
            self.sizes[seq] = self.live[seq] = 0
            self.holes.pop(seq, None)
            self._punched_dead.pop(seq, None)
            self._forget_damage(seq)
            with contextlib.suppress(OSError):
                self.reserve.arm()
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_of(seq))
        self._hook("unlinked", seq)
        self.holes.pop(seq, None)
        self._punched_dead.pop(seq, None)
        self.sizes.pop(seq, None)  # gone: never read again (a failed fsync below wedged
        self.live.pop(seq, None)  # every later run on this pack's FileNotFoundError)
        self._forget_damage(seq)  # kept aside before
        self._retired.discard(seq)
        self._unsure.pop(seq, None)
        self._unlinked.add(seq)
        self.compacted += 1
        self._sync_unlinks()
        with contextlib.suppress(OSError):  # space came back: keep some of it back again
            self.reserve.arm()

    def _sync_unlinks(self) -> None:
        """Make the unlinks done durable (fsync `packs/`); until then an unlinked pack still
        counts as existing for the tombstone rule (`_needed`): a crash may bring it back."""
        if self._unlinked:
            fsync_dir(self.pack_dir)
            self._unlinked.clear()
