"""Repair: rebuild missing or corrupt shards so every stripe returns to k+m, zone-safely.

Work comes from the repair queue (R, stripe) (writes that could not place every shard,
reads that met damage, corrupt shards the node scrubbers quarantined) and from a bounded
background sweep over the stripe index `X` that finds shards on nodes that are out (or
down past a grace) or missing from their node (paced to `sweep_rate_stripes_s` while every
node is up, so its idle cost stays flat however many objects; unpaced while a node is down
or out, for the pass after a node returns, and for the rest of a pass that found a shard
missing on an up node). Stripes with the fewest healthy shards go first; a running batch
re-plans when nodes change (`repair_batch`). Rebuilt shards go to healthy nodes chosen by placement with no zone above m, and the
manifest change is committed with compare-and-swap on every record holding the manifest;
if the version vanished meanwhile, the new shards are queued for collection. The sweep
also deletes orphaned shards (no stripe index entry, or a stale copy the manifest no longer
names) once they are older than a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field

from storage.config import Config, NodeSpec, RepairSettings
from storage.errors import DataUnavailable, KeyCheckUnavailable, StorageError
from storage.health import UP, HealthTracker
from storage.keyspace import (
    REPAIR,
    STRIPE,
    next_key,
    repair_key,
    space,
    stripe_of,
    system_key,
    urgent_repair_key,
    urgent_repair_span,
)
from storage.metadata import Item, MetadataStore, Txn
from storage.placement import place
from storage.rebuild import Reference, SourcesDisagree, rebuild_shards
from storage.records import PartLayout, pack, unpack
from storage.shards.transport import NodeTransport
from storage.throttle import Throttle
from storage.workers import WorkerState
from storage.workers.base import (
    ShardWorker,
    read_counters,
)
from storage.workers.gcfence import Fence, copy_name, read_fence
from storage.workers.manifests import (
    KEPT_STATES,
    Commit,
    Manifest,
    MapGuard,
    collect_copies,
    commit_shard_moves,
    load_manifest,
    volume_stripes,
)
from storage.workers.repair_assess import Assessment, RepairAssessor
from storage.workers.repair_batch import (
    ASSESS_PARALLEL,
    BATCH,
    FRESH_S,
    RETRY_S,
    RepairBatches,
)
from storage.workers.repair_lanes import GATHER_SHARD_BYTES, WHOLE_SHARD_BYTES
from storage.workers.repair_lostpacks import clear_repaired_losses
from storage.workers.repair_orphans import OrphanWatch, RepairHousekeeping

log = logging.getLogger("tessera.repair")
STATS_KEY = system_key("repair")
ORPHAN_MIN_INTERVAL_S = 5.0  # orphan pages are checked at most this often
# The nodes' quarantine reports are read at least this often, paced sweep or not (a paced
# pass may take a sweep step only every few minutes; a scrubber's find should not wait).
QUARANTINE_POLL_S = 5.0
SWEEP_BURST_S = 60.0  # the paced sweep's burst: this many seconds of sweep_rate_stripes_s
# The wait of an entry whose target copy a collector has claimed and not settled (a delete
# under way, or a collector that died until another reruns its entry): rebuilding now would
# only be refused at the commit, again and again, ahead of every other entry.
PENDING_RETRY_S = 5.0
REFUSED_RETRY_S = RETRY_S  # a refused rebuild's first retry, doubling per refusal ...
REFUSED_MAX_S = 3600.0  # ... up to this
# Refusals of one stripe after which it is named in an error line, `tessera status` and
# `tessera fsck`: a refusal with every holder up means the k shards read do not
# authenticate under the stripe's key (several liars, or a wrong key identity), which the
# counts alone (`rebuilds_refused`) never tied to a stripe.
REFUSED_ALARM = 3


def _waiting(a: Assessment) -> set[int]:
    """Indexes a rebuild does not read whose node may yet hold them: down (within its
    grace, or lost past it), or judged lost while down by an assessment made before the
    node came back. Not the named liars, nor shards gone from a node that was up
    (`absent`): nothing better can come back for those."""
    return {i for i in a.missing if i not in a.absent and i not in a.lying} | set(a.unknown)


@dataclass
class RepairStats:
    """Counters published under `(S, repair)` for `tessera status`."""

    stripes_repaired: int = 0
    shards_rebuilt: int = 0
    bytes_rebuilt: int = 0
    unrepairable: int = 0
    commit_conflicts: int = 0
    orphans_deleted: int = 0
    orphan_checks: int = 0  # orphan checks made (a page of each usable node's shards each)
    orphans_watched: int = 0  # shards without an owner the orphan watch holds (a gauge)
    orphan_watch_oldest_s: float = 0.0  # how long its longest-watched one has been (a gauge)
    # the orphan walk's position on each node: published, so the next holder (a restart, a
    # lease move) continues the walk rather than starting every node's again at its first shard
    orphan_cursor: dict = field(default_factory=dict)
    quarantine_reports: int = 0
    sources_disagree: int = 0  # rebuilds stopped because a source lied
    rebuilds_refused: int = 0  # of those, with nobody to name (`_refused`), each retry
    sweep_passes: int = 0
    sweep_checked: int = 0
    last_sweep_start: float = 0.0
    last_sweep_end: float = 0.0
    last_pass_health: dict[str, int] = field(default_factory=dict)  # healthy shards -> stripes
    pacing: dict = field(default_factory=dict)  # safe stripes' rate (workers/base._note_pacing)
    updated: float = 0.0


class RepairWorker(ShardWorker[RepairStats], RepairAssessor, RepairBatches,
                   RepairHousekeeping):
    name = "repair"
    stats_key = STATS_KEY
    stats_type = RepairStats
    idle_s = 0.25  # the runner's pause after an idle step: queued damage is picked up fast
    wake_prefix = space(REPAIR)[0]  # on etcd, queued damage wakes it (storage/workers/wakes)

    @property
    def watched_idle_s(self) -> float:
        """The idle pause when queue changes wake it: sweeps and node returns still due."""
        return min(2.0, self.settings.sweep_interval_s)

    def __init__(self, cfg: Config, meta: MetadataStore, client: NodeTransport,
                 health: HealthTracker, cpu: Executor,
                 settings: RepairSettings | None = None,
                 clients_busy: Callable[[], bool] | None = None) -> None:
        self.settings = settings or cfg.repair
        super().__init__(cfg, meta, client, health, cpu, self.settings.rate_bytes_s,
                         self.settings.busy_rate_bytes_s, clients_busy,
                         self.settings.busy_lag_ms)
        # Set by the gateway (the deep scrub's check of one stripe, with the object's key):
        # called when a rebuild's sources disagree, it reports the lying ones.
        self.verify_stripe: Callable[[bytes], Awaitable[list[int]]] | None = None
        # Stripes at risk are rebuilt at the full rate, never the busy rate.
        self._urgent = Throttle(self.settings.rate_bytes_s)
        self._queue_cursor = space(REPAIR)[0]
        self._sweep_cursor = space(STRIPE)[0]
        self._next_sweep = 0.0
        self._next_orphans = 0.0
        self._next_quarantine = 0.0
        # the sweep's pacing (`_paced`): stripes it may still check now, refilled over time
        self._budget = self._burst()
        self._budget_at = time.monotonic()
        self._unpaced = False  # a node returned: its pass runs at full speed
        self._pass_health: dict[str, int] = {}
        self._pass_started = 0.0
        self._pass_unknown: set[str] = set()  # nodes a shard of this pass was unknown on
        self._volume_stripes: set[bytes] | None = None
        self._orphan_watch = OrphanWatch()
        self._quarantine_since: dict[str, float] = {}
        self._dirty = True
        # Node returns (down or out, then up again): a return starts a sweep at once (its
        # lost shards are found in one pass, not after `sweep_interval_s`) and makes the
        # entries deferred before it due now (they waited for a zone-safe node). A node
        # marked down or out makes them due too: a stripe repaired while that node was
        # still counted up was deferred when the shard sent to it failed, and its next
        # attempt places that shard elsewhere (it waited RETRY_S before). Seen mid-batch
        # too (`repair_batch`).
        self._init_batches()
        self._sweep_again = False
        # Assessments the sweep just made of stripes it queued (stripe -> (when, nodes, it)):
        # the queue step reuses them instead of statting every shard again.
        self._fresh: dict[bytes, tuple[float, list[str | None], Assessment]] = {}

    # the repair queue ----------------------------------------------------------------------

    async def step(self) -> WorkerState:
        await self._load_stats()
        await self._refresh_pacing()
        self._note_returns()
        self._newly_lost()  # (a batch re-plans on what changes from here on)
        busy = False
        sweeping = time.monotonic() >= self._next_sweep
        if sweeping:
            busy = await self.sweep_step() or busy
        busy = await self.queue_step() or busy
        # after the repairs the sweep may have queued, so detection is not delayed
        if sweeping or time.monotonic() >= self._next_quarantine:
            await self._poll_quarantine()
            self._next_quarantine = time.monotonic() + min(QUARANTINE_POLL_S,
                                                           self.settings.sweep_interval_s)
        if sweeping:
            # Orphans are costly (a manifest load per shard) and never urgent: not while
            # the queue has work.
            if not busy and time.monotonic() >= self._next_orphans:
                await self._collect_orphans()
                self._next_orphans = time.monotonic() + max(ORPHAN_MIN_INTERVAL_S,
                                                            self.settings.sweep_interval_s)
        self._dirty = self._note_pacing() or self._dirty
        await self._publish()
        return WorkerState.BUSY if busy else WorkerState.IDLE

    async def queue_step(self) -> bool:
        """Repair queued stripes: the urgent queue first, then one batch of the queue.

        Stripes at risk (`at_risk`) go first and unthrottled; of the safe ones at most
        `parallel` are repaired per step (under the busy-rate throttle), so newly urgent
        work never waits behind a long batch of safe stripes paced for client load.
        """
        now = time.time()
        read = await self._meta.range(*urgent_repair_span(), limit=BATCH)
        urgent = [it for it in read if self._due(unpack(it.value), now)]
        if urgent:  # each entry is repaired, dropped or deferred: this cannot spin
            await self._run_batch(urgent, safe_cap=0, refill=len(read) >= BATCH)
            return True
        items = await self._meta.range(self._queue_cursor, space(REPAIR)[1], limit=BATCH)
        left = await self._run_batch(items, safe_cap=max(1, self.settings.parallel))
        if left:  # safe stripes not reached this step: the cursor stays before them
            self._queue_cursor = min(left)
        elif len(items) < BATCH:
            self._queue_cursor = space(REPAIR)[0]
        else:
            self._queue_cursor = next_key(items[-1].key)
        return bool(items) and (bool(left) or self._progress)

    async def _drop(self, item: Item) -> None:
        await self._meta.txn(Txn(compares={item.key: item.revision}, deletes=(item.key,)))
        self._dirty = True

    async def _defer(self, item: Item, entry: dict, reason: str,
                     retry_s: float = RETRY_S) -> None:
        entry = {**entry, "retry_at": time.time() + retry_s, "deferred_at": time.time(),
                 "error": reason[:200]}
        entry.setdefault("queued", time.time())
        await self._meta.txn(Txn(compares={item.key: item.revision},
                                 puts={item.key: pack(entry)}))

    async def _repair(self, item: Item, man: Manifest, a: Assessment,
                      throttle: Throttle | None = None,
                      committing: Callable[[], AbstractAsyncContextManager[None]] | None = None,
                      ) -> bool:
        """Rebuild a stripe's missing shards and commit them. `committing` (from a batch)
        wraps the commit: it waits for a commit slot, then frees the stripe's lane."""
        part = man.part
        entry = unpack(item.value)
        if not a.missing:
            await self._drop(item)
            return False
        ref = await self._reference(man, a)
        reference, keyless = ref if ref is not None else (None, False)
        usable = {**a.healthy, **(a.lying if reference is not None else {})}
        if len(usable) < part.k:
            self.stats.unrepairable += 1
            self._dirty = True
            log.error("stripe %s has %d healthy shards, fewer than k=%d; cannot repair now",
                      part.stripe_id.hex(), len(a.healthy), part.k)
            await self._defer(item, entry, f"only {len(a.healthy)} healthy shards")
            return False
        profile = self._cfg.profile(part.profile) if part.profile in self._cfg.profiles \
            else self._cfg.profile()
        keep = {**a.healthy, **a.unknown}
        zone_counts: dict[str, int] = {}
        for nid in keep.values():
            z = self._by_id[nid].zone
            zone_counts[z] = zone_counts.get(z, 0) + 1
        chosen = place(part.stripe_id, profile, self._health.placeable(), exclude=set(keep.values()),
                       zone_counts=zone_counts, count=len(a.missing))
        if not chosen:
            await self._defer(item, entry, "no healthy node can take a shard zone-safely")
            return False
        targets: dict[int, NodeSpec] = dict(zip(a.missing, chosen, strict=False))
        sources = [(i, self._by_id[n]) for i, n in sorted(usable.items())]
        fence = await read_fence(self._meta, part.stripe_id)  # before any shard is written
        pending = fence.pending_copies()
        if any(copy_name(i, t.id) in pending for i, t in targets.items()):
            await self._defer(item, entry, "a target copy is pending deletion", PENDING_RETRY_S)
            return False
        rebuild = asyncio.ensure_future(rebuild_shards(
            self._client, self._cpu, part, sources, targets, throttle or self._throttle,
            reference=reference, trusted=set(a.healthy) if keyless else None, pool=self._pool,
            whole_bytes=WHOLE_SHARD_BYTES, gather_bytes=GATHER_SHARD_BYTES,
            guard=self._guard(man, _waiting(a)) if reference is None else None))
        self._rebuilding[part.stripe_id] = (rebuild, man, a)  # a node's return may stop it
        try:
            res = await rebuild
        except asyncio.CancelledError:
            if not rebuild.cancelled() or asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            return False  # made moot by a node's return: its entry stays, due
        except DataUnavailable as exc:
            self.stats.unrepairable += 1
            self._dirty = True
            await self._defer(item, entry, str(exc))
            return False
        except KeyCheckUnavailable as exc:  # retried later: never rebuilt unchecked
            log.warning("stripe %s: %s", part.stripe_id.hex(), exc)
            await self._defer(item, entry, str(exc))
            return False
        except SourcesDisagree as exc:  # a source lies: find it (with the key), then rebuild
            self.stats.sources_disagree += 1
            self._dirty = True
            log.warning("stripe %s: %s", part.stripe_id.hex(), exc)
            found = await self.verify_stripe(part.stripe_id) \
                if self.verify_stripe is not None else []
            # The check's liars go into this entry, due now: the check's own reports
            # (`LyingShards`) skip a shard reported in the last minute, so a liar rewritten
            # and lying again soon after would wait for that minute, its stripe unrepaired.
            if not await self._name_liars(item, entry, part, set(found) - set(a.lying)):
                await self._refused(item, entry, str(exc))
            return False
        finally:
            self._rebuilding.pop(part.stripe_id, None)
        for i, reason in res.failed.items():
            self._health.report_failure(targets[i].id, reason)
        if not res.written:
            await self._defer(item, entry, "; ".join(res.failed.values()) or "no shard written")
            return False
        async with committing() if committing is not None else contextlib.nullcontext():
            outcome = await self._commit(part.stripe_id, list(part.nodes), res.written, fence)
        if outcome is Commit.REFUSED:  # a delete claimed a copy meanwhile: wait for it
            await self._defer(item, entry, "a written copy was claimed for deletion",
                              PENDING_RETRY_S)
        committed = outcome is Commit.DONE
        if committed:
            self.stats.stripes_repaired += 1
            self.stats.shards_rebuilt += len(res.written)
            self.stats.bytes_rebuilt += res.bytes_written
            self._dirty = True
            log.info("stripe %s: rebuilt shards %s (%d healthy, %d unknown, %s)",
                     part.stripe_id.hex(), sorted(res.written), len(a.healthy), len(a.unknown),
                     "at risk" if self.at_risk(part, a) else "safe")
            await self._publish(min_interval_s=0.5)  # progress while a batch runs
            complete = len(res.written) == len(a.missing) and not a.unknown
            # liars no one had named yet (found on the way): rewrite them next
            if await self._name_liars(item, entry, part, res.liars - set(a.missing)):
                pass
            elif complete:
                await self._drop(item)
            else:
                await self._defer(item, entry, "partially repaired")
        return committed

    async def _refused(self, item: Item, entry: dict, reason: str) -> None:
        """A rebuild refused with nobody to name: the sources read (k of them, or k+1 the
        check could not sort out) do not authenticate, and a liar among k cannot be named
        until another shard returns. Retried with a per-stripe back-off (REFUSED_RETRY_S
        doubling up to REFUSED_MAX_S: not a full-rate read of the stripe every 30 s
        forever); a node's return still makes it due at once (`_due`)."""
        n = int(entry.get("refused", 0)) + 1
        self.stats.rebuilds_refused += 1
        self._dirty = True
        if n >= REFUSED_ALARM:
            log.error("stripe %s: rebuild refused %d times in a row (%s): its remaining shards "
                      "do not authenticate; with every holder up this is several lying shards "
                      "or a wrong key identity (see `tessera status`, `tessera fsck`)",
                      stripe_of(item.key).hex(), n, reason)
        await self._defer(item, {**entry, "refused": n}, f"rebuild refused: {reason}",
                          min(REFUSED_RETRY_S * 2 ** (n - 1), REFUSED_MAX_S))

    async def _name_liars(self, item: Item, entry: dict, part: PartLayout,
                          liars: set[int]) -> bool:
        """Name `liars` (shard indexes of the manifest as read) in the stripe's entry and
        make it due now, so the next attempt rewrites them; False if there are none."""
        more = {str(i): part.nodes[i] for i in liars
                if i < len(part.nodes) and part.nodes[i]}
        if not more:
            return False
        lying = {**(entry.get("lying") or {}), **more}
        await self._meta.txn(Txn(compares={item.key: item.revision}, puts={
            item.key: pack({**{k: v for k, v in entry.items() if k != "refused"},
                            "lying": lying, "retry_at": 0})}))
        return True

    async def _reference(self, man: Manifest, a: Assessment) -> tuple[Reference, bool] | None:
        """How to rebuild a stripe with named liars: segment by segment from the blocks that
        authenticate (the liars' honest blocks included). Without the key (SSE-C, shredded)
        the codeword more than k blocks agree on is the reference, so a liar nobody has
        named yet cannot spread into the rebuilt shards; a segment with no such codeword
        (a lost shard besides a liar) is rebuilt from the shards not named, when they are k
        or more (`rebuild_shards`' `trusted`). With whether it is keyless; None: no liars."""
        if not a.lying or self.stripe_codec is None:
            return None
        try:
            codec = await self.stripe_codec(man)
        except StorageError:
            return None
        if codec is None:
            return None
        return codec.reference, codec.cipher is None

    async def _commit(self, stripe_id: bytes, old: list[str | None],
                      written: dict[int, str], fence: Fence) -> Commit:
        outcome, conflicts = await commit_shard_moves(self._meta, stripe_id, old, written, fence,
                                                       MapGuard(self._cfg, self._health))
        self.stats.commit_conflicts += conflicts
        return outcome

    async def _collect(self, stripe_id: bytes, written: dict[int, str]) -> None:
        await collect_copies(self._meta, stripe_id, written)

    # the sweep -----------------------------------------------------------------------------

    async def enqueue(self, stripe_id: bytes, reason: str, urgent: bool = False) -> None:
        """Queue a stripe (no-op if queued); `urgent` ones go to (R, !, stripe), read first."""
        key = urgent_repair_key(stripe_id) if urgent else repair_key(stripe_id)
        await self._meta.txn(Txn(compares={key: 0}, puts={
            key: pack({"reason": reason[:200], "queued": time.time()})}))

    async def sweep_step(self) -> bool:
        """One bounded step of the background sweep; True while a pass is in progress."""
        if self._sweep_cursor == space(STRIPE)[0]:
            self._pass_started = time.time()
            self._pass_unknown = set()
            self._volume_stripes = await volume_stripes(self._meta)
            stale = time.monotonic() - FRESH_S
            self._fresh = {k: v for k, v in self._fresh.items() if v[0] >= stale}
        items = await self._meta.range(self._sweep_cursor, space(STRIPE)[1],
                                       limit=self.settings.sweep_batch)
        gate = asyncio.Semaphore(ASSESS_PARALLEL)
        silent: list[bytes] = []

        async def check(item: Item) -> None:
            ref = unpack(item.value)
            if ref.get("state") not in KEPT_STATES:
                return
            async with gate:
                stripe_id = stripe_of(item.key)
                man = await load_manifest(self._meta, stripe_id)
                if not isinstance(man, Manifest) or not man.part.size:
                    return
                a = await self.assess(man.part)
                self._pass_unknown.update(a.unknown.values())  # not checked there
                n = str(len(a.healthy) + len(a.unknown))
                self._pass_health[n] = self._pass_health.get(n, 0) + 1
                self.stats.sweep_checked += 1
                if a.absent:
                    silent.append(stripe_id)
                if a.missing:
                    await self.enqueue(stripe_id, f"sweep: shards {a.missing} missing",
                                       urgent=self.at_risk(man.part, a))
                    self._fresh[stripe_id] = (time.monotonic(), list(man.part.nodes), a)

        await asyncio.gather(*(check(it) for it in items))
        if silent and not self._unpaced:  # shards lost on up nodes: more may be (a disk
            # going bad, files removed): the rest of this pass runs unpaced
            log.warning("sweep: shards missing on up nodes (stripe %s and %d more); the "
                        "rest of this pass runs unpaced", silent[0].hex(), len(silent) - 1)
            self._unpaced = True
        if len(items) < self.settings.sweep_batch:
            self._sweep_cursor = space(STRIPE)[0]
            self.stats.sweep_passes += 1
            self.stats.last_sweep_start = self._pass_started
            self.stats.last_sweep_end = time.time()
            await clear_repaired_losses(  # not a node this pass could not check whole
                self._meta, self._client,
                [n for n in self._health.usable() if n.id not in self._pass_unknown],
                self._pass_started)
            self.stats.last_pass_health = dict(self._pass_health)
            self._pass_health = {}
            paced = self._paced(len(items))
            self._next_sweep = paced if self._sweep_again else \
                max(paced, time.monotonic() + self.settings.sweep_interval_s)
            self._unpaced = self._sweep_again
            self._sweep_again = False
            self._dirty = True
            return False
        self._sweep_cursor = next_key(items[-1].key)
        self._next_sweep = self._paced(len(items))
        return True

    def _burst(self) -> float:
        """Stripes the paced sweep may check at once: SWEEP_BURST_S worth (at least a
        batch), so a cluster with fewer stripes sweeps as fast as unpaced."""
        return max(float(self.settings.sweep_batch),
                   self.settings.sweep_rate_stripes_s * SWEEP_BURST_S)

    def _paced(self, checked: int) -> float:
        """When the next sweep step may run after one that looked at `checked` stripes:
        at once while unpaced (no rate, a node down or out, or the pass after a return),
        else once the budget, refilled at `sweep_rate_stripes_s`, is no longer overdrawn
        (a wait of at most one batch's worth)."""
        rate = self.settings.sweep_rate_stripes_s
        now = time.monotonic()
        if rate <= 0 or self._unpaced or \
                any(s.state != UP for s in self._health.states.values()):
            self._budget, self._budget_at = self._burst(), now
            return 0.0
        self._budget = min(self._burst(), self._budget + (now - self._budget_at) * rate)
        self._budget -= checked
        self._budget_at = now
        return 0.0 if self._budget >= 0 else now - self._budget / rate

    async def _publish(self, min_interval_s: float = 0.0) -> None:
        if not self._dirty or time.time() - self.stats.updated < min_interval_s:
            return
        self.stats.updated = time.time()
        await self._meta.put(STATS_KEY, pack(asdict(self.stats)))
        self._dirty = False


def refused_alarm(key: bytes, entry: dict) -> dict | None:
    """The alarm of a repair queue entry (`key`, unpacked `entry`) refused `REFUSED_ALARM`
    times or more in a row: {stripe, refused, error}; None for any other entry."""
    n = int(entry.get("refused", 0) or 0)
    if n < REFUSED_ALARM:
        return None
    return {"stripe": stripe_of(key).hex(), "refused": n, "error": str(entry.get("error", ""))}


async def read_stats(meta: MetadataStore) -> dict:
    """The last published repair counters (empty when no repair worker ran yet)."""
    return await read_counters(meta, STATS_KEY)
