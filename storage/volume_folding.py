"""The journaled volume's folder: extents written whole, and compactions, to bound memory
and the journal.

Folds write an extent whole (stored bytes + overlay pages, `jseq` = the journal sequence
they include) when the overlay passes 3/4 of its page bound (fullest extents first, down to
FOLD_LOW %), when the journal passes twice the bound (the oldest segment's extents: those
with few pages are compacted instead, their pages re-journaled in one append), when writes
go idle, and at detach; a segment is retired once every extent it touches is folded or
compacted. `Folding` is mixed into `storage.volume_overlay.JournaledVolume`, whose state
(pages, pending, live segments, locks, clean-extent cache) it works on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from typing import Any

from storage.errors import StorageError
from storage.volume_io import VolumeHandle
from storage.volume_journal import Segment, is_zero, retire
from storage.volume_records import Fenced
from storage.waits import wait_event

PAGE = 4096
IDLE_FOLD_S = 5.0  # no writes for this long: fold everything
PARALLEL_FOLDS = 4
# Past 3/4 of the page bound, folds free pages down to FOLD_LOW % of it: the fuller the
# overlay stays, the more pages each fold (a whole extent written) takes out of it.
FOLD_LOW = 70
COMPACT_SHARE = 2  # a large journal compacts extents with under 1/COMPACT_SHARE in pages...
COMPACT_BYTES = 16 << 20  # ... re-journaling at most this many bytes of pages per append
_MISS = object()


class Folding:
    """The folder's half of a journaled volume (see `JournaledVolume` for the state)."""

    vol: VolumeHandle
    pages: dict[int, dict[int, bytes]]
    pending: dict[int, set[int]]
    npages: int
    max_pages: int
    seq: int
    live: dict[int, tuple[Segment, set[int]]]
    journal_bytes: int
    folds: int
    error: BaseException | None
    _mutex: threading.Lock
    _locks: dict[int, asyncio.Lock]
    _sync_lock: asyncio.Lock
    _fold_sem: asyncio.Semaphore
    _space: asyncio.Condition
    _wake_fold: asyncio.Event
    _folding: set[int]
    _last_write: float
    _clean: OrderedDict[int, bytes | None]

    async def flush(self, compact: tuple[int, ...] = ()) -> None:
        raise NotImplementedError

    async def _stored(self, idx: int, displace: bool = True) -> bytes | None:
        raise NotImplementedError

    def _replaced(self, idx: int, data: bytes | None, displace: bool = True) -> None:
        raise NotImplementedError

    def _drop(self, idx: int, snap: dict[int, bytes]) -> None:
        raise NotImplementedError

    def _direct_base(self, idx: int, pages: dict[int, bytes], pend: set[int]) -> Any:
        raise NotImplementedError

    async def _fold(self, idx: int) -> None:
        """Write extent idx whole (stored bytes + its pages) and drop the pages it took."""
        lock = self._locks.setdefault(idx, asyncio.Lock())
        async with lock, self._fold_sem:
            # No append in flight: every segment up to `seq` (committed or failed) holds
            # pages that are in the overlay still or folded into the stored bytes.
            async with self._sync_lock:
                with self._mutex:
                    snap = dict(self.pages.get(idx, {}))
                jseq = self.seq
                if not snap:
                    return
                self._folding.add(idx)  # no direct write of idx until this one commits
            try:
                await self._fold_write(idx, snap, jseq)
            finally:
                self._folding.discard(idx)
                async with self._space:  # writers at the bound, and `snapshot`, wait on it
                    self._space.notify_all()

    async def _fold_write(self, idx: int, snap: dict[int, bytes], jseq: int) -> None:
        """Commit extent idx as its stored bytes with snap's pages, drop them, retire."""
        elen = self.vol.extent_len(idx)
        if len(snap) * PAGE >= elen:
            buf = bytearray(elen)
        else:
            base = await self._stored(idx, displace=False)
            buf = bytearray(self.vol.fit(idx, base) if base is not None else bytes(elen))
        for po, page in snap.items():
            buf[po:po + len(page)] = page
        data = bytes(buf)
        if is_zero(data):
            await self.vol.trim_extent(idx, jseq=jseq)
            self._replaced(idx, None, displace=False)
        else:
            await self.vol.write_extent(idx, data, jseq=jseq)
            self._replaced(idx, data, displace=False)
        self.folds += 1
        self._drop(idx, snap)
        await self._folded(idx, jseq)

    async def _folded(self, idx: int, jseq: int) -> None:
        """Extent idx now folds in every segment up to jseq: retire segments left empty."""
        done = []
        for seq, (seg, todo) in self.live.items():
            if seq > jseq:
                break
            todo.discard(idx)
            if not todo:
                done.append(seg)
        for seg in done:  # out of `live` before the await: another fold must not retire it
            del self.live[seg.seq]
            self.journal_bytes -= seg.size
        if done:
            await retire(self.vol, done)

    async def _fold_many(self, targets: list[int]) -> None:
        results = await asyncio.gather(*(self._fold(i) for i in targets),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for e in errors:
            if isinstance(e, Fenced):
                self.error = e
        if errors:
            raise errors[0]

    def _fold_targets(self) -> tuple[list[int], list[int]]:
        """Which extents to fold now and which to compact: the fullest first while over the
        page bound; the oldest segment's while the journal is large (those with few pages
        are compacted, the rest folded); everything folded once writes are idle."""
        with self._mutex:
            return self._fold_targets_locked()

    def _fold_targets_locked(self) -> tuple[list[int], list[int]]:
        if not self.pages:
            return [], []
        if time.monotonic() - self._last_write >= IDLE_FOLD_S:
            return list(self.pages), []
        out: list[int] = []
        if self.npages * 4 >= self.max_pages * 3:
            # Extents the next append writes whole (sequential runs) free their pages there,
            # stored once: folding them would store them as journal and fold both.
            direct = [i for i, pend in self.pending.items()
                      if self._direct_base(i, self.pages.get(i, {}), pend) is not _MISS]
            goal = (self.npages - self.max_pages * FOLD_LOW // 100
                    - sum(len(self.pages.get(i, {})) for i in direct))
            by_size = sorted(set(self.pages) - set(direct), key=lambda i: -len(self.pages[i]))
            freed = 0
            for i in by_size:
                if freed >= goal:
                    break
                out.append(i)
                freed += len(self.pages[i])
        compact: list[int] = []
        if self.journal_bytes > 2 * self.max_pages * PAGE and self.live:
            # A random writer's segment touches most extents, so folding the oldest one's
            # would write nearly every extent whole; an extent with few pages is cheaper to
            # re-journal (its pages only) than to rewrite (the whole extent and its read).
            folded = set(out)
            for i in sorted(next(iter(self.live.values()))[1]):
                pages = self.pages.get(i)
                if not pages or i in folded:
                    continue
                if len(pages) * PAGE * COMPACT_SHARE < self.vol.extent_len(i):
                    compact.append(i)
                else:
                    out.append(i)
        return list(dict.fromkeys(out)), compact

    async def _compact(self, targets: list[int]) -> None:
        """Re-journal the targets' overlay pages (appends of at most COMPACT_BYTES each), so
        the segments before them retire without writing the extents whole."""
        group: list[int] = []
        n = 0
        for idx in targets:
            group.append(idx)
            n += len(self.pages.get(idx, {}))
            if n * PAGE >= COMPACT_BYTES:
                await self.flush(tuple(group))
                group, n = [], 0
        if group:
            await self.flush(tuple(group))

    async def _fold_round(self) -> None:
        """One round of the folder: fold, then compact, what `_fold_targets` picks.

        Folds first: only they free overlay pages, and writers may be waiting at the bound;
        a compaction (appends of up to COMPACT_BYTES) frees journal, not memory, so run
        first it held those writers for its appends too."""
        targets, compact = self._fold_targets()
        if targets:
            await self._fold_many(targets)
        if compact:
            await self._compact(compact)

    async def _folder(self) -> None:
        while True:
            await wait_event(self._wake_fold, IDLE_FOLD_S / 2)
            self._wake_fold.clear()
            if self.npages * 4 >= self.max_pages * 3 and self.npending:
                try:  # over the bound: the append writes sequential extents whole first
                    await self.flush()
                except Fenced:
                    return
                except StorageError:
                    pass  # the barriers report it; folding may still make room
            try:
                await self._fold_round()
            except Fenced:
                async with self._space:
                    self._space.notify_all()
                return
            except StorageError:
                await asyncio.sleep(1.0)
