"""Journaled writes in front of an attached volume: an in-memory overlay of 4 KiB pages.

Writes land in the overlay (page granular; a partial page is read-modify-written) and are
marked pending. `flush()` is the durability barrier: it appends every pending page to the
journal as one segment (`storage/volume_journal.py`) and returns once the segment is at
write quorum and its record committed; a background task does the same every
`sync_delay_s`, so a barrier rarely has much to write. An extent whose pending pages hold
long contiguous runs (a sequential writer) skips the journal: the append writes it whole as
a new extent version instead (`jseq` = the append's sequence number, so replay never lays an
older journal page over it, and segments after it still apply), so sequential bytes are
stored once, not twice. Reads see the overlay over the stored extents; `try_read` serves
them on the caller's thread when the overlay and the clean-extent cache hold every byte. A background folder writes whole extents (stored bytes + overlay pages,
`jseq` = the journal sequence they include) when the overlay or the journal grows past
its bound, when writes go idle, and at `stop()` (detach); a segment is retired once every
extent it touches is folded. Only pages of a full 4 KiB are kept, so a random 4 KiB write
costs one page in memory and a share of one journal append, not a whole-extent re-encode.

Same interface as the gateway's `ExtentCache` (start, stop, read, write, zero, flush,
checkpoint, error), which the FUSE driver uses when the journal is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict

from storage.errors import KeyUnavailable, StorageError
from storage.testing.crash_points import die_at
from storage.volume_folding import _MISS, PAGE, PARALLEL_FOLDS, Folding
from storage.volume_io import VolumeHandle
from storage.volume_journal import Segment, append, is_zero
from storage.volume_records import Fenced, check_snapshot_name
from storage.waits import wait_event

SYNC_DELAY_S = 0.2  # background journal appends: pending pages wait at most this long
SYNC_BATCH = 8 << 20  # ... or until this many bytes are pending
DIRECT_RUN = 32  # pages: a pending run at least this long counts as sequential (128 KiB)
DIRECT_SHARE = 4  # an extent goes direct when such runs cover >= 1/DIRECT_SHARE of it
PARALLEL_DIRECT = 8


class JournaledVolume(Folding):
    """The journal's write path and read view for one attached volume (one writer)."""

    def __init__(self, vol: VolumeHandle, max_dirty: int = 128 << 20,
                 max_clean: int = 128 << 20, seq: int | None = None) -> None:
        self.vol = vol
        self.es = vol.vol.extent_size
        self.max_pages = max(64, max_dirty // PAGE)
        self._max_clean_n = max(2, max_clean // self.es)
        self.pages: dict[int, dict[int, bytes]] = {}  # extent -> {page offset -> 4 KiB}
        self.npages = 0
        self.pending: dict[int, set[int]] = {}  # pages changed since the last append
        self.npending = 0
        self.seq = max(vol.journal_floor(), vol.journal_seq) if seq is None else seq
        self.durable = self.seq
        self.live: dict[int, tuple[Segment, set[int]]] = {}  # seq -> (segment, unfolded)
        self.journal_bytes = 0
        self._clean: OrderedDict[int, bytes | None] = OrderedDict()  # stored bytes
        self._epoch: dict[int, int] = {}  # bumped when a fold or trim replaces an extent
        self._sync_lock = asyncio.Lock()
        self._locks: dict[int, asyncio.Lock] = {}
        self._fold_sem = asyncio.Semaphore(PARALLEL_FOLDS)
        self._space = asyncio.Condition()
        self._wake_sync = asyncio.Event()
        self._wake_fold = asyncio.Event()
        self._waking: set[asyncio.Event] = set()  # wakes handed to the loop, not yet set
        self._last_write = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        # Guards pages/pending against `try_write` on the driver's threads; the loop thread
        # holds it only for short sections without an await.
        self._mutex = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self.appends = 0
        self.appended_bytes = 0
        self.folds = 0
        self.extent_reads = 0  # stored extents read from the nodes (reads, folds, RMW)
        self.compactions = 0  # appends that re-journaled extents' pages to retire segments
        self.directs = 0  # extents a barrier wrote directly instead of journaling
        self._direct_sem = asyncio.Semaphore(PARALLEL_DIRECT)
        self._folding: set[int] = set()  # extents a fold has snapshotted and not committed

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._syncer()), loop.create_task(self._folder())]

    async def stop(self) -> None:
        """Detach barrier: append what is pending, fold everything, stop the tasks."""
        try:
            await self.checkpoint()
        finally:
            for t in self._tasks:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            self._tasks = []

    async def checkpoint(self) -> None:
        """Fold every journaled page into its extent (`quiesce`: the fallback snapshot of a
        daemon from before the snapshot attribute freezes extents only)."""
        await self.flush()
        while self.pages:
            await self._fold_many(list(self.pages))
        await self.flush()

    async def snapshot(self, name: str) -> int:
        """Take snapshot `name` of this volume at one point in time; returns its generation.

        Under the append lock (no append, direct extent or trim meanwhile) the snapshot
        freezes the extent map together with the journal range it replays over it: every
        segment from the oldest one not yet folded to the last sequence spent. It is then
        what an attach after a crash right there would read: every write appended (so every
        one fsynced) before it, none appended after. Nothing is folded for it: the writer
        folds on in the background, at the next generation, and the segments the snapshot
        needs are kept when retired (storage/volume_held.py). Folding the journal first, as
        this did, held the daemon's setxattr, and with it every write and fsync on the
        mount, for one whole-extent rewrite per extent the journal touched (13-50 s).
        """
        check_snapshot_name(name)
        await self.flush()  # writes accepted before the call: appended, most of them here
        async with self._sync_lock:
            hi = self.seq
            lo = min(self.live, default=hi + 1)
            while True:  # the freeze compares our lease: a writer fenced meanwhile freezes
                v = self.vol.vol  # nothing (its successor's journal is not in the extents)
                g = await self.vol.svc.freeze(v.tenant, v.name, name,
                                              await self.vol.lease_guard(),
                                              (lo, hi) if lo <= hi else None)
                if g is not None:
                    return g

    @property
    def dirty_bytes(self) -> int:
        return self.npages * PAGE

    # reads ---------------------------------------------------------------------------------

    async def _stored(self, idx: int, displace: bool = True) -> bytes | None:
        """The extent's stored bytes (None: zeros), through a small LRU (`displace`: whether
        the bytes read may push another extent out of it)."""
        with self._mutex:
            if idx in self._clean:
                self._clean.move_to_end(idx)
                return self._clean[idx]
        while True:  # a fold that lands during the read makes what we read stale
            epoch = self._epoch.get(idx, 0)
            data = await self.vol.read_extent(idx)
            self.extent_reads += 1
            if self._epoch.get(idx, 0) == epoch:
                self._remember(idx, data, displace)
                return data
            with self._mutex:
                if idx in self._clean:
                    return self._clean[idx]

    def _replaced(self, idx: int, data: bytes | None, displace: bool = True) -> None:
        self._epoch[idx] = self._epoch.get(idx, 0) + 1
        self._remember(idx, data, displace)

    def _remember(self, idx: int, data: bytes | None, displace: bool = True) -> None:
        """Cache an extent's stored bytes. A fold passes displace=False: it adds the extent
        only where there is room (an extent already cached is updated): the extent a random
        writer's overlay folds next is the one folded longest ago, the very one an LRU has
        just dropped, so folds through an LRU smaller than the extents written never hit;
        a cache that keeps the extents it holds serves that share of folds from memory."""
        with self._mutex:  # `try_read` looks at the cache from the driver's threads
            if not displace and idx not in self._clean and len(self._clean) >= self._max_clean_n:
                return
            self._clean[idx] = data
            self._clean.move_to_end(idx)
            while len(self._clean) > self._max_clean_n:
                self._clean.popitem(last=False)

    async def _extent_range(self, idx: int, lo: int, hi: int) -> bytes:
        """Bytes [lo, hi) of extent idx as written: overlay pages over stored bytes."""
        pages = self.pages.get(idx, {})
        first, last = lo - lo % PAGE, hi
        covered = all(p in pages for p in range(first, last, PAGE))
        if covered:
            blob = b"".join(pages[p] for p in range(first, last, PAGE))
            return blob[lo - first:hi - first]
        base = await self._stored(idx)
        buf = bytearray(base[lo:hi] if base is not None else bytes(hi - lo))
        if len(buf) < hi - lo:
            buf += bytes(hi - lo - len(buf))
        for p in range(first, last, PAGE):
            page = self.pages.get(idx, {}).get(p)
            if page is None:
                continue
            a, b = max(p, lo), min(p + PAGE, hi)
            buf[a - lo:b - lo] = page[a - p:b - p]
        return bytes(buf)

    def try_read(self, offset: int, length: int) -> bytes | None:
        """Read from any thread without a trip to the loop: the bytes when overlay pages and
        cached stored extents hold all of them, else None (the caller awaits `read`)."""
        if self.vol.revoked or not self.vol.lease_valid():
            return None  # `read` answers: KeyUnavailable, or Fenced
        end = min(offset + length, self.vol.vol.size)
        out = []
        pos = offset
        with self._mutex:
            while pos < end:
                idx, off = divmod(pos, self.es)
                n = min(self.vol.extent_len(idx) - off, end - pos)
                pages = self.pages.get(idx, {})
                base = _MISS
                p = off - off % PAGE
                while p < off + n:
                    a, b = max(p, off), min(p + PAGE, off + n)
                    page = pages.get(p)
                    if page is None:
                        if base is _MISS:
                            base = self._clean.get(idx, _MISS)
                            if base is _MISS:
                                return None
                            if base is not None:
                                base = self.vol.fit(idx, base)
                        out.append(bytes(b - a) if base is None else base[a:b])
                    else:
                        out.append(page[a - p:b - p])
                    p += PAGE
                pos += n
        return b"".join(out)

    async def read(self, offset: int, length: int) -> bytes:
        await self.vol.check_held()  # Fenced: the overlay is no longer what the volume holds
        try:
            await self.vol.check_revoked()
        except KeyUnavailable:
            with self._mutex:
                self._clean.clear()
            raise
        end = min(offset + length, self.vol.vol.size)
        out = []
        pos = offset
        while pos < end:
            idx, off = divmod(pos, self.es)
            n = min(self.vol.extent_len(idx) - off, end - pos)
            out.append(await self._extent_range(idx, off, off + n))
            pos += n
        return b"".join(out)

    # writes --------------------------------------------------------------------------------

    def try_write(self, offset: int, data: bytes) -> int | None:
        """Write whole pages from any thread without a trip to the loop; None when the
        write needs the loop (partial pages, the bound reached, an error, past the end)."""
        n = len(data)
        if (offset % PAGE or n % PAGE or not n or offset + n > self.vol.vol.size
                or self.error is not None or self.npages >= self.max_pages
                or not self.vol.lease_valid()):
            return None
        with self._mutex:
            for pos in range(offset, offset + n, PAGE):
                idx, off = divmod(pos, self.es)
                page = data if n == PAGE else data[pos - offset:pos - offset + PAGE]
                self._put_locked(idx, off, page)
            self._last_write = time.monotonic()
        self._nudge(threadsafe=self._loop is not None)
        return n

    def _nudge(self, threadsafe: bool = False) -> None:
        """Wake the appender or the folder when their thresholds are crossed.

        From the driver's threads a wake is handed to the loop once: until the loop has set
        the event, later writes see it on its way (`_waking`) and schedule nothing, so a
        busy loop is not sent one callback and one self-pipe write per request.
        """
        wake = []
        if self.npending * PAGE >= SYNC_BATCH and not self._wake_sync.is_set():
            wake.append(self._wake_sync)
        if ((self.npages * 4 >= self.max_pages * 3
             or self.journal_bytes > 2 * self.max_pages * PAGE)
                and not self._wake_fold.is_set()):
            wake.append(self._wake_fold)
        for ev in wake:
            if threadsafe and self._loop is not None:
                if ev in self._waking:
                    continue
                self._waking.add(ev)  # a racing thread may add it too: one extra wake
                self._loop.call_soon_threadsafe(self._wake, ev)
            else:
                ev.set()

    def _wake(self, ev: asyncio.Event) -> None:
        self._waking.discard(ev)
        ev.set()

    def _put(self, idx: int, po: int, page: bytes) -> None:
        with self._mutex:
            self._put_locked(idx, po, page)

    def _put_locked(self, idx: int, po: int, page: bytes) -> None:
        pages = self.pages.setdefault(idx, {})
        if po not in pages:
            self.npages += 1
        pages[po] = page
        pend = self.pending.setdefault(idx, set())
        if po not in pend:
            pend.add(po)
            self.npending += 1

    async def write(self, offset: int, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        await self.vol.check_held()
        end = min(offset + len(data), self.vol.vol.size)
        if self.npages >= self.max_pages:
            await self._wait_space()
        pos = offset
        mv = memoryview(data)
        while pos < end:
            idx, off = divmod(pos, self.es)
            po = off - off % PAGE
            elen = self.vol.extent_len(idx)
            n = min(po + PAGE, elen) - off
            n = min(n, end - pos)
            if off == po and n == min(PAGE, elen - po):
                self._put(idx, po, bytes(mv[pos - offset:pos - offset + n]))
            else:  # a partial page: read-modify-write it
                while True:
                    epoch = self._epoch.get(idx, 0)
                    base = await self._extent_range(idx, po, min(po + PAGE, elen))
                    with self._mutex:  # over the page as it is now: a whole page `try_write`
                        # put from another thread since the read is kept, not overwritten
                        # with the older bytes read (an acknowledged write lost); one a fold
                        # took into the extent meanwhile is read again (review20f)
                        page = self.pages.get(idx, {}).get(po)
                        if page is None and self._epoch.get(idx, 0) != epoch:
                            continue
                        cur = bytearray(page or base)
                        cur[off - po:off - po + n] = mv[pos - offset:pos - offset + n]
                        self._put_locked(idx, po, bytes(cur))
                    break
            pos += n
        self._last_write = time.monotonic()
        self._nudge()
        return end - offset

    async def zero(self, offset: int, length: int) -> None:
        """Punch a hole: whole extents become trim pointers, partial edges zero pages.

        Extents never written and not in the overlay already read as zeros and are skipped.
        """
        end = min(offset + length, self.vol.vol.size)
        pos = offset
        while pos < end:
            idx, off = divmod(pos, self.es)
            n = min(self.vol.extent_len(idx) - off, end - pos)
            if idx in self.pages or self.vol.holds_data(idx):
                if n == self.vol.extent_len(idx):
                    await self._trim(idx)
                else:
                    await self.write(pos, bytes(n))
            pos += n

    async def _trim(self, idx: int) -> None:
        """Drop the extent's pages and commit a trim pointer past every appended segment."""
        lock = self._locks.setdefault(idx, asyncio.Lock())
        async with lock, self._sync_lock:
            with self._mutex:
                dropped = self.pages.pop(idx, {})
                self.npages -= len(dropped)
                self.npending -= len(self.pending.pop(idx, set()))
                self._clean.pop(idx, None)  # `try_read` must not see stored bytes sans pages
                self._epoch[idx] = self._epoch.get(idx, 0) + 1
            # Past every sequence spent, committed or not: no segment may replay over it.
            await self.vol.trim_extent(idx, jseq=self.seq)
            self._replaced(idx, None)
            await self._folded(idx, self.seq)
        async with self._space:
            self._space.notify_all()

    async def _wait_space(self) -> None:
        async with self._space:
            while self.npages >= self.max_pages:
                if self.error is not None:
                    raise self.error
                self._wake_sync.set()  # sequential extents leave with the next append
                self._wake_fold.set()
                await self._space.wait()

    # journal appends -------------------------------------------------------------------------

    async def flush(self, compact: tuple[int, ...] = ()) -> None:
        """Durability barrier: every write accepted before it is in a committed segment or
        in an extent written directly (sequential runs) under this barrier's sequence.

        `compact`: extents whose every overlay page goes into this segment, pending or not;
        once it commits, every older segment is stale for them (their stored bytes plus
        this segment hold all they are), so those segments retire without a fold."""
        if self.error is not None:
            raise self.error
        self.vol.check_fenced()
        async with self._sync_lock:
            if not self.npending and not compact:
                return
            seq = self.seq + 1
            with self._mutex:
                for idx in compact:  # under the lock that takes `pending`: no page missed
                    pend = self.pending.setdefault(idx, set())
                    more = self.pages.get(idx, {}).keys() - pend
                    pend |= more
                    self.npending += len(more)
                pending, self.pending, self.npending = self.pending, {}, 0
                entries = []
                touched = []
                direct: dict[int, tuple[bytes | None, dict[int, bytes]]] = {}
                for idx in sorted(pending):
                    pages = self.pages.get(idx, {})
                    base = self._direct_base(idx, pages, pending[idx])
                    if base is not _MISS:
                        direct[idx] = (base, dict(pages))  # type: ignore[assignment]
                        continue
                    base_off = idx * self.es
                    n = len(entries)
                    for po in sorted(pending[idx]):
                        page = pages.get(po)
                        if page is not None:  # else folded meanwhile: in its extent
                            entries.append((base_off + po, page))
                    if len(entries) > n:
                        touched.append(idx)  # pages never cross an extent's end
            if not entries and not direct:
                return
            # From here `seq` is spent even on failure: a direct extent may have committed
            # with jseq = seq, so no later segment may reuse the number.
            self.seq = seq
            jobs = [self._write_direct(idx, base, snap, seq)
                    for idx, (base, snap) in direct.items()]
            if entries:
                jobs.append(append(self.vol, seq, entries, touched))
            results = await asyncio.gather(*jobs, return_exceptions=True)
            failed: dict[int, set[int]] = {}
            for idx, res in zip(direct, results, strict=False):
                if isinstance(res, BaseException):
                    failed[idx] = pending[idx]
            seg = results[-1] if entries else None
            if isinstance(seg, BaseException):
                failed.update({i: p for i, p in pending.items() if i not in direct})
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                with self._mutex:  # still pending: the next barrier retries
                    for idx, pos in failed.items():
                        cur = self.pending.setdefault(idx, set())
                        self.npending += len(pos - cur)
                        cur |= pos
                if any(isinstance(e, Fenced) for e in errors):
                    self.error = next(e for e in errors if isinstance(e, Fenced))
            if isinstance(seg, Segment):
                self.appends += 1
                self.appended_bytes += seg.size
                self.journal_bytes += seg.size
                self.live[seq] = (seg, set(seg.extents))
            if errors:
                raise errors[0]
            self.durable = seq
            die_at("volume-after-append", f"{self.vol.vol.name}/{seq}/")  # a test hook
        for idx in direct:
            await self._folded(idx, seq)
        if compact:
            self.compactions += 1
            for idx in set(compact).intersection(touched):
                await self._folded(idx, seq - 1)
        async with self._space:
            self._space.notify_all()

    def _direct_base(self, idx: int, pages: dict[int, bytes], pend: set[int]) -> object:
        """The stored bytes to write extent idx over directly (None: zeros), or _MISS to
        journal its pending pages: pending runs of DIRECT_RUN pages or more must cover a
        DIRECT_SHARE of it (random pages stay in the journal), no fold or trim may hold it,
        and its stored bytes must be at hand (every page in the overlay, the clean cache,
        or no stored extent at all), so a barrier never waits on a read."""
        elen = self.vol.extent_len(idx)
        if len(pend) * PAGE * DIRECT_SHARE < elen:
            return _MISS
        run = prev = covered = 0
        for po in sorted(pend):
            run = run + 1 if po == prev + PAGE and run else 1
            prev = po
            if run == DIRECT_RUN:
                covered += DIRECT_RUN
            elif run > DIRECT_RUN:
                covered += 1
        if covered * PAGE * DIRECT_SHARE < elen:
            return _MISS
        if idx in self._folding:  # its older snapshot could commit over ours
            return _MISS
        if len(pages) * PAGE >= elen:
            return None
        if idx in self._clean:
            return self._clean[idx]
        p = self.vol.pointer(idx)
        return None if (p is None or p.trim) and idx not in self.vol.patches else _MISS

    async def _write_direct(self, idx: int, base: bytes | None, snap: dict[int, bytes],
                            seq: int) -> None:
        """Write extent idx whole (base + overlay pages) as the version at journal `seq`;
        the caller holds the append lock, so no fold can snapshot it meanwhile. Drops the
        pages it took."""
        async with self._direct_sem:
            elen = self.vol.extent_len(idx)
            buf = bytearray(self.vol.fit(idx, base) if base is not None
                            and len(snap) * PAGE < elen else bytes(elen))
            for po, page in snap.items():
                buf[po:po + len(page)] = page
            data = bytes(buf)
            if is_zero(data):
                await self.vol.trim_extent(idx, jseq=seq)
                self._replaced(idx, None)
            else:
                await self.vol.write_extent(idx, data, jseq=seq)
                self._replaced(idx, data)
            self.directs += 1
            self._drop(idx, snap)

    def _drop(self, idx: int, snap: dict[int, bytes]) -> None:
        """Drop the overlay pages an extent write took, unless rewritten since."""
        with self._mutex:
            pages = self.pages.get(idx, {})
            for po, page in snap.items():
                if pages.get(po) is page:
                    del pages[po]
                    self.npages -= 1
            if not pages:
                self.pages.pop(idx, None)

    async def _syncer(self) -> None:
        while True:
            await wait_event(self._wake_sync, SYNC_DELAY_S)
            self._wake_sync.clear()
            if not self.npending:
                continue
            try:
                await self.flush()
            except Fenced:
                return
            except StorageError:
                await asyncio.sleep(1.0)  # barriers report the error; retry later
