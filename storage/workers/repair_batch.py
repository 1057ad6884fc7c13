"""Repair's batches, and the node changes that re-plan them while they run.

A batch assesses its stripes, sorts them (at risk first, then fewest healthy) and rebuilds
them through `RepairLanes`. A batch of large rebuilds can run for many seconds; it does not
wait for its end to notice the cluster change. Every `WATCH_S` it checks the health
tracker, and when a node returns (or restarts), goes down or out, or passes its down grace:

- rebuilds under way of a shard whose node is back (or restarted) are stopped when that
  node holds the shard whole again (one stat each: a restart may have wiped it); finishing
  would rebuild it elsewhere for nothing. Not for a node ever seen out (taken out, often for
  its disk: a stat cannot vouch for its frames), and once per stripe (a flapping node cannot
  keep a rebuild from ever finishing);
- stripes of the batch not yet started are left for the new plan (they keep their entry);
- the sweep runs beside the rebuilds still under way (at once and unpaced after a return),
  and the due urgent entries are read again, assessed and started in risk order, so a
  stripe now at k does not wait behind the rest of a batch planned before the change.

An urgent batch also tops itself up: while more due urgent entries wait than it took
(`BATCH` a read), the next ones are read, assessed and started as its gates free up, so a
large repair runs as rolling batches of up to `ROLL_S` and its lanes do not drain to one
straggler every `BATCH` stripes (measured: `benchmarks/README.md`, session 12). A top-up
starts each stripe at most once per batch. A stripe's lane is freed once its rebuilt shards
are written (acknowledged durable by their nodes): its manifest commit runs beside the next
stripe's rebuild, and the gates still bound the shard bytes in flight. At most `parallel`
commits of a batch run at once: a stripe whose commit finds no slot keeps its lane until one
frees, so rebuilds slow down when commits back up (the commits of a multipart object's
stripes all compare-and-swap one version record, and pile-ups there mean retries).

Everything runs inside the worker's step: stopping the worker (a lost lease) cancels it all,
and so does the first commit the store refuses for the lease (LeaseFenced: the batch starts
no more rebuilds, as each commit would be refused too); a metadata error while re-planning is logged and the rebuilds under way go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping

from storage.errors import StorageError
from storage.health import DOWN, OUT, UP
from storage.keyspace import STRIPE, space, stripe_of, urgent_repair_span
from storage.metadata import Item
from storage.metadata.fence import LeaseFenced
from storage.pipeline import segment_count
from storage.records import PartLayout, unpack
from storage.shards.ids import shard_id
from storage.workers.manifests import Manifest, load_manifest
from storage.workers.repair_assess import Assessment
from storage.workers.repair_lanes import WHOLE_SHARE, RepairLanes

log = logging.getLogger("tessera.repair")
WATCH_S = 0.25  # how often a running batch looks at the nodes' health
RETRY_S = 30.0
FRESH_S = 5.0  # a sweep's assessment is reused by the queue step for this long
# Stripes assessed (k+m stats each) at once: a whole sweep page, so the stats bound for one
# node gather in a few batch requests (up to 64 ops each) instead of one or two per stripe
# (measured: 4.2 -> 1.5 ms of gateway + node CPU per stripe checked).
ASSESS_PARALLEL = 128
BATCH = 64
# An urgent batch tops itself up for this long at most: then it drains and the step ends, so
# the sweep, the quarantine poll and live pacing settings still get their turn between steps.
ROLL_S = 10.0
Work = tuple[bool, int, Item, Manifest, Assessment]  # (safe, healthy shards, entry, ...)


class RepairBatches:
    """The repair worker's batch runner and node-change tracking (a base of `RepairWorker`)."""

    def _init_batches(self) -> None:
        self._states: dict[str, str] = {}
        self._started: dict[str, float] = {}  # each node's reported start (`_note_returns`)
        self._lost_seen: set[str] = set()  # down nodes past their grace, as last seen
        self._changed_at = 0.0
        self._plan = 0  # bumped when a change re-plans the running batch
        self._busy: set[bytes] = set()  # stripes being rebuilt or committed
        self._rebuilding: dict[bytes, tuple[asyncio.Future, Manifest, Assessment]] = {}
        self._progress = False
        self._seen_out: set[str] = set()  # nodes seen out: their return stops no rebuild
        self._stopped_moot: set[bytes] = set()  # stripes whose rebuild was stopped once

    # node changes -------------------------------------------------------------------------

    def _note_returns(self) -> tuple[set[str], bool]:
        """Notice nodes that came back, restarted, or went down or out, since last looked;
        returns (those back from down or out, whether any changed). See `_changed_at`."""
        back: set[str] = set()
        gone = False
        for nid, s in self._health.states.items():
            before = self._states.get(nid)
            if s.state == UP and before in (DOWN, OUT):
                back.add(nid)
            elif s.started and self._started.get(nid, s.started) != s.started:
                back.add(nid)  # restarted between probes (in any state: seen while suspect
                # too): what it holds may have changed
            elif s.state in (DOWN, OUT) and before == UP or s.state == OUT and before == DOWN:
                gone = True  # OUT after DOWN too: a stripe refused while a holder might
                # return (SSE-C at k, `_guard`) may be rebuilt now, not after its back-off
            if s.state == OUT:
                self._seen_out.add(nid)
            self._states[nid] = s.state
            if s.started:
                self._started[nid] = s.started
        if gone:
            self._changed_at = time.time()  # deferred entries are due: placed elsewhere
            if self._sweep_cursor != space(STRIPE)[0]:  # a paced pass goes on unpaced now
                self._next_sweep = 0.0
        if back:
            log.info("a node returned or restarted: sweeping now")
            self._changed_at = time.time()
            # the sweep's assessments made before it count the returned node's shards
            # lost: reused, a rebuild from the others would rewrite them in place
            self._fresh.clear()
            self._unpaced = True  # until the pass that sees the return whole has ended
            self._next_sweep = 0.0
            if self._sweep_cursor != space(STRIPE)[0]:  # what this pass already checked
                self._sweep_again = True
        return back, gone

    def _newly_lost(self) -> bool:
        """A down node passed its grace since last looked: its shards now count as lost."""
        lost = {nid for nid, s in self._health.states.items() if s.state == DOWN and
                s.for_s() > self.settings.down_grace_s}
        new = bool(lost - self._lost_seen)
        self._lost_seen = lost
        return new

    def _due(self, entry: Mapping, now: float) -> bool:
        """A queue entry to work on now: not deferred, past its retry time, or deferred
        before a node returned (the node it waited for may be that one) or went down."""
        retry_at = float(entry.get("retry_at", 0))
        return retry_at <= now or \
            float(entry.get("deferred_at", retry_at - RETRY_S)) < self._changed_at

    async def _replan(self) -> bool:
        """After a change seen mid-batch: stop the rebuilds it made moot, retire the plan."""
        back, gone = self._note_returns()
        lost = self._newly_lost()
        if not (back or gone or lost):
            return False
        moot = [(sid, task, man.part, i, man.part.nodes[i])
                for sid, (task, man, a) in self._rebuilding.items() for i in a.missing
                if i not in a.lying and i < len(man.part.nodes) and man.part.nodes[i] in back
                and man.part.nodes[i] not in self._seen_out and sid not in self._stopped_moot]
        found = await asyncio.gather(*(self._still_there(p, i, nid) for _, _, p, i, nid in moot))
        for (sid, task, _, i, nid), there in zip(moot, found, strict=True):
            if there and not task.done():  # (a restart may have wiped it: stat says)
                log.info("stripe %s: shard %d is back on %s; rebuild stopped", sid.hex(), i, nid)
                if len(self._stopped_moot) >= 100_000:
                    self._stopped_moot.clear()
                self._stopped_moot.add(sid)
                task.cancel()
        self._plan += 1
        return True

    async def _still_there(self, part: PartLayout, i: int, nid: str) -> bool:
        """Whether node `nid` holds shard `i` of the stripe whole (as `assess` judges it)."""
        try:
            st = await self._client.stat_shard(self._by_id[nid], shard_id(part.stripe_id, i))
        except (StorageError, KeyError):
            return False
        return st is not None and st.get("index") == i and \
            int(st.get("segments", -1)) == segment_count(part.size, part.segment_size)

    # batches ------------------------------------------------------------------------------

    async def _assess_items(self, items: list[Item]) -> list[Work]:
        """Assess the due entries of `items` (dropping or deferring those with no stripe to
        repair), sorted at risk first, then fewest healthy."""
        now = time.time()
        work: list[Work] = []
        gate = asyncio.Semaphore(ASSESS_PARALLEL)

        async def look(item: Item) -> None:
            entry = unpack(item.value)
            if not self._due(entry, now):
                return
            async with gate:
                stripe_id = stripe_of(item.key)
                man = await load_manifest(self._meta, stripe_id)
                if not isinstance(man, Manifest):
                    if man is None or man == "gone" or \
                            now - float(entry.get("queued", now)) > 3600:
                        await self._drop(item)
                    else:  # still being written: look again later
                        await self._defer(item, entry, f"stripe is {man}")
                    return
                if not man.part.size:
                    await self._drop(item)
                    return
                lying = entry.get("lying") or {}
                a = None if lying else self._fresh.pop(stripe_id, None)
                if a is None or a[0] < time.monotonic() - FRESH_S or a[1] != man.part.nodes:
                    a = (0.0, [], await self.assess(man.part, lying))
                risky = self.at_risk(man.part, a[2])
                work.append((not risky, len(a[2].healthy), item, man, a[2]))

        await asyncio.gather(*(look(it) for it in items))
        work.sort(key=lambda w: (w[0], w[1], w[2].key))  # at risk, then fewest healthy, first
        return work

    async def _run_batch(self, items: list[Item], safe_cap: int,
                         refill: bool = False) -> list[bytes]:
        """Assess and repair `items`, stripes at risk first; returns the keys of safe ones
        left for a later step (beyond `safe_cap`, or not started before a re-plan; 0 = none
        are left). Re-plans when the nodes change while it runs; with `refill` (`items`
        read from the urgent queue) tops itself up from it (module docstring)."""
        self._progress = False
        more = refill  # the urgent queue may hold more entries than were read
        tried = {stripe_of(it.key) for it in items}
        roll_end = time.monotonic() + ROLL_S
        next_refill = 0.0
        work = await self._assess_items(items)
        left: list[bytes] = []
        if safe_cap:
            safe = [w for w in work if w[0] and w[4].missing]
            left = [w[2].key for w in safe[safe_cap:]]
            work = [w for w in work if not w[0] or not w[4].missing] + safe[:safe_cap]
        lanes = RepairLanes(self.settings.parallel)
        commits = asyncio.Semaphore(self.settings.parallel)  # commits in flight, at most
        running: dict[asyncio.Task[bool], tuple[bytes, int]] = {}  # -> (stripe, plan)

        async def fix(plan: int, w: Work) -> bool:
            safe, _, item, man, a = w
            sid = man.part.stripe_id
            gate = lanes.gate(man.part)
            await gate.acquire()
            held = True

            def free() -> None:
                nonlocal held
                if held:
                    held = False
                    gate.release()

            @contextlib.asynccontextmanager
            async def committing() -> AsyncIterator[None]:
                async with commits:  # the bytes are written: once a commit slot is free, the
                    free()  # next stripe may start while this one commits (module docstring)
                    yield

            try:
                if plan != self._plan or sid in self._busy:  # re-planned while it waited
                    left.append(item.key)
                    return False
                self._busy.add(sid)
                try:
                    return await self._repair(item, man, a,
                                              self._throttle if safe else self._urgent,
                                              committing)
                except LeaseFenced:  # another process holds the lease: every other commit
                    for t in running:  # would be refused too, so stop them all now
                        if t is not asyncio.current_task():
                            t.cancel()
                    raise
                finally:
                    self._busy.discard(sid)
            finally:
                free()

        def start(batch: list[Work]) -> None:
            waiting = {v for v in running.values() if v[1] == self._plan}
            for w in batch:  # tasks start in this order, so they queue at the gates in it
                sid = w[3].part.stripe_id
                if sid not in self._busy and (sid, self._plan) not in waiting:
                    running[asyncio.ensure_future(fix(self._plan, w))] = (sid, self._plan)

        start(work)
        sweeping = False
        error: BaseException | None = None
        try:
            while running:
                done, _ = await asyncio.wait(running, timeout=WATCH_S)
                for t in done:
                    del running[t]
                    if t.cancelled():
                        continue
                    if t.exception() is not None:
                        error = error or t.exception()
                    elif t.result():
                        self._progress = True
                if isinstance(error, LeaseFenced):
                    break  # (the fenced stripe cancelled the others): start no more
                now = time.monotonic()
                if more and len(running) <= self.settings.parallel * WHOLE_SHARE and \
                        (not running or now >= next_refill) and now < roll_end:
                    next_refill = now + WATCH_S
                    try:
                        more = await self._top_up(running, tried, start)
                    except StorageError as exc:
                        log.warning("repair: reading more urgent entries failed (%s)", exc)
                        more = False
                if not running:
                    continue
                try:
                    changed = await self._replan()
                    swept = sweeping and time.monotonic() >= self._next_sweep
                    if changed:
                        sweeping = True  # until the pass ends: what changed is found now
                        swept = time.monotonic() >= self._next_sweep
                    if swept:
                        sweeping = await self.sweep_step()
                    if changed or swept:  # the due urgent entries, in risk order, beside
                        skip = self._busy | {v[0] for v in running.values()
                                             if v[1] == self._plan}
                        await self._start_urgent(skip, BATCH, tried, start)
                except StorageError as exc:  # (an etcd hiccup as a node goes down): only
                    log.warning("repair: re-planning failed (%s); the rebuilds go on", exc)
                    # a lost lease (the step cancelled) stops what is under way
        finally:
            for t in running:
                t.cancel()
        if error is not None:
            raise error
        return left

    async def _top_up(self, running: Mapping[asyncio.Task[bool], tuple[bytes, int]],
                      tried: set[bytes], start: Callable[[list[Work]], None]) -> bool:
        """Start the due urgent entries this batch has not tried yet (assessed, in risk
        order, behind those already waiting at the gates); whether more may wait."""
        skip = self._busy | {v[0] for v in running.values()} | tried
        limit = min(BATCH + len(skip), 8 * BATCH)  # past entries tried, deferred or failed
        new, read = await self._start_urgent(skip, limit, tried, start)
        return new > 0 and read >= limit

    async def _start_urgent(self, skip: set[bytes], limit: int, tried: set[bytes],
                            start: Callable[[list[Work]], None]) -> tuple[int, int]:
        """Read up to `limit` urgent entries, start those not in `skip` (assessed, in risk
        order) and note them `tried`; how many were started and how many read."""
        urgent = await self._meta.range(*urgent_repair_span(), limit=limit)
        new = [it for it in urgent if stripe_of(it.key) not in skip]
        tried.update(stripe_of(it.key) for it in new)
        start(await self._assess_items(new))
        return len(new), len(urgent)
