"""Rebalancing: move shards off draining nodes, and toward nodes with less data.

A pass walks the stripe index `X` in batches. Every shard on a draining node is moved to
an active node chosen by placement with no zone above m; a stripe with no shard on a
draining node may give one shard from a node above the mean used bytes to a node well
below it (a new node), while the pass's byte budget lasts. A shard is moved by copying
its file (a streaming GET from the old node, every frame verified, a streaming PUT to the
new one); when the old node cannot serve it, the shard is rebuilt from k others instead.
The manifest change is committed with compare-and-swap (the repair commit path) and the
old copy queued for garbage collection. Progress is published under `(S, rebalance)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field

from storage.config import Config, NodeSpec, Profile, RebalanceSettings
from storage.errors import StorageError
from storage.health import HealthTracker
from storage.keyspace import MEMBER, STRIPE, next_key, space, stripe_of, system_key
from storage.membership import ACTIVE, DRAINING, Member, apply, load_map
from storage.metadata import MetadataStore
from storage.pipeline import segment_count, shard_file_bytes
from storage.placement import place
from storage.rebuild import part_headers, rebuild_shards
from storage.records import PartLayout, pack, unpack
from storage.shards.format import pack_frame
from storage.shards.ids import shard_id
from storage.shards.transport import NodeTransport
from storage.stripes import _ShardSender
from storage.throttle import Throttle
from storage.workers import WorkerState
from storage.workers.base import (
    ShardWorker,
    read_counters,
)
from storage.workers.gcfence import read_fence
from storage.workers.manifests import (
    KEPT_STATES,
    Commit,
    Manifest,
    MapGuard,
    commit_shard_moves,
    load_manifest,
)

log = logging.getLogger("tessera.rebalance")
STATS_KEY = system_key("rebalance")


@dataclass
class RebalanceStats:
    """Counters published under `(S, rebalance)` for `tessera status` and `tessera node list`."""

    state: str = "idle"  # idle | draining | balancing
    shards_moved: int = 0
    bytes_moved: int = 0
    copied: int = 0  # moved by copying the shard file
    rebuilt: int = 0  # rebuilt from k other shards (old copy unreadable)
    failed: int = 0
    commit_conflicts: int = 0
    refused: int = 0  # moves a collector's pending delete of the target copy refused
    balance_moves: int = 0
    passes: int = 0
    last_pass_start: float = 0.0
    last_pass_end: float = 0.0
    draining: dict[str, dict] = field(default_factory=dict)  # node -> {left, moved, since}
    drained: list[str] = field(default_factory=list)  # draining nodes a full pass found empty
    moved_to: dict[str, int] = field(default_factory=dict)  # node -> shards moved onto it
    pacing: dict = field(default_factory=dict)  # its rate (workers/base._note_pacing)
    updated: float = 0.0


async def copy_shard(client: NodeTransport, part: PartLayout, index: int, src: NodeSpec,
                     dst: NodeSpec, throttle: Throttle | None = None,
                     stall_s: float = 20.0) -> int:
    """Stream shard `index` of a stripe from `src` to `dst`, verifying every frame.

    Returns the bytes written; raises StorageError when either side fails.
    """
    header = part_headers(part)[index]
    nsegs = segment_count(part.size, part.segment_size)
    sid = shard_id(part.stripe_id, index)
    length = shard_file_bytes(part.size, part.segment_size, part.k)
    sender = _ShardSender(client, dst, sid, header.pack(), nsegs, stall_s, length,
                          replace=True)  # a move may meet a stale copy on dst
    sent = 0
    try:
        async for seg, block in client.read_frames(src, sid, header, 0, nsegs):
            frame = pack_frame(header, seg, block)
            await sender.send(frame)
            sent += len(frame)
            if not sender.alive:
                break
            if throttle is not None:
                await throttle.consume(len(frame))
        ok = await sender.finish()
    except BaseException:
        await sender.cancel()
        raise
    if not ok:
        raise StorageError(sender.error or f"copy to {dst.id} failed")
    return sent


@dataclass
class _Move:
    man: Manifest
    moves: dict[int, tuple[str, NodeSpec]]  # index -> (old node id, new node)
    balance: bool = False


WATCHED_MAX_S = 30.0  # the longest sleep of a watched, idle rebalancer


class Rebalancer(ShardWorker[RebalanceStats]):
    name = "rebalance"
    stats_key = STATS_KEY
    stats_type = RebalanceStats
    # on etcd a membership change (a drain) wakes it (storage/workers/wakes); otherwise an
    # idle rebalancer sleeps until its next pass instead of re-reading the members each second
    wake_prefix = space(MEMBER)[0]

    @property
    def watched_idle_s(self) -> float:
        """The idle pause when membership changes wake it: until the next pass is due."""
        return min(WATCHED_MAX_S, max(0.0, self._next_pass - time.monotonic()))

    def __init__(self, cfg: Config, meta: MetadataStore, client: NodeTransport,
                 health: HealthTracker, cpu: Executor,
                 settings: RebalanceSettings | None = None,
                 clients_busy: Callable[[], bool] | None = None) -> None:
        self.settings = settings or cfg.rebalance
        super().__init__(cfg, meta, client, health, cpu, self.settings.rate_bytes_s,
                         self.settings.busy_rate_bytes_s, clients_busy,
                         self.settings.busy_lag_ms)
        self._cursor = space(STRIPE)[0]
        self._next_pass = 0.0
        self._in_pass = False
        self._seen: dict[str, int] = {}  # draining node -> shards seen this pass
        self._moved: dict[str, int] = {}  # draining node -> shards moved off this pass
        self._used: dict[str, float] = {}  # planned used bytes per node (balance)
        self._mean: dict[str, float] = {}  # role -> mean used bytes at the pass start
        self._receivers: set[str] = set()  # nodes well below their role's mean at the start
        self._budget = 0
        self._draining_ids: set[str] = set()

    # one step --------------------------------------------------------------------------------

    async def step(self) -> WorkerState:
        await self._load_stats()
        await self._refresh_pacing()
        members, epoch = await load_map(self._meta, self._cfg)
        apply(self._health, members, epoch)
        draining = {m.spec.id: m for m in members if m.state == DRAINING}
        self._forget_undrained(draining)
        if not self._in_pass:
            changed = set(draining) != self._draining_ids
            self._draining_ids = set(draining)
            if not changed and time.monotonic() < self._next_pass:
                return WorkerState.IDLE
            if not draining and not self._plan_balance(members):
                self.stats.state = "idle"
                self._next_pass = time.monotonic() + self.settings.interval_s
                await self._publish()
                return WorkerState.IDLE
            self._start_pass(draining)
        items = await self._meta.range(self._cursor, space(STRIPE)[1], limit=self.settings.batch)
        jobs: list[_Move] = []
        for item in items:
            if unpack(item.value).get("state") not in KEPT_STATES:
                continue
            man = await load_manifest(self._meta, stripe_of(item.key))
            if not isinstance(man, Manifest) or not man.part.size:
                continue
            job = self._plan(man, draining)
            if job is not None:
                jobs.append(job)
        sem = asyncio.Semaphore(self.settings.parallel)

        async def run(job: _Move) -> None:
            async with sem:
                await self._execute(job, draining)

        await asyncio.gather(*(run(j) for j in jobs))
        if len(items) < self.settings.batch:
            self._end_pass(draining)
        else:
            self._cursor = next_key(items[-1].key)
            self._progress(draining)
        await self._publish()
        return WorkerState.BUSY if self._in_pass or draining and jobs else WorkerState.IDLE

    # passes ----------------------------------------------------------------------------------

    def _start_pass(self, draining: dict[str, Member]) -> None:
        self._in_pass = True
        self._cursor = space(STRIPE)[0]
        self._seen = dict.fromkeys(draining, 0)
        self._moved = dict.fromkeys(draining, 0)
        self.stats.last_pass_start = time.time()
        self.stats.state = "draining" if draining else "balancing"

    def _end_pass(self, draining: dict[str, Member]) -> None:
        self._in_pass = False
        self._cursor = space(STRIPE)[0]
        self.stats.passes += 1
        self.stats.last_pass_end = time.time()
        for nid, m in draining.items():
            left = self._seen.get(nid, 0) - self._moved.get(nid, 0)
            d = self.stats.draining.setdefault(nid, {"since": m.since, "moved": 0})
            if self.stats.last_pass_start >= m.since:  # a whole pass since the drain began
                d["left"] = d["left_at_pass_start"] = left
                if left == 0 and nid not in self.stats.drained:
                    self.stats.drained.append(nid)
                    log.info("node %s is drained", nid)
        if not draining:
            self.stats.state = "idle"
        busy = any(self.stats.draining.get(n, {}).get("left") != 0 for n in draining)
        self._next_pass = time.monotonic() + (0.2 if busy else self.settings.interval_s)

    def _progress(self, draining: dict[str, Member]) -> None:
        for nid in draining:
            d = self.stats.draining.setdefault(nid, {"since": draining[nid].since, "moved": 0})
            if d.get("left_at_pass_start") is not None:
                d["left"] = max(0, int(d["left_at_pass_start"]) - self._moved.get(nid, 0))

    def _forget_undrained(self, draining: dict[str, Member]) -> None:
        """Drop progress of nodes no longer draining (reactivated or removed)."""
        for nid in list(self.stats.draining):
            d = self.stats.draining[nid]
            if nid not in draining or float(d.get("since", 0)) != draining[nid].since:
                del self.stats.draining[nid]
                if nid in self.stats.drained:
                    self.stats.drained.remove(nid)
                if nid in draining:  # drained again later: start over
                    self.stats.draining[nid] = {"since": draining[nid].since, "moved": 0}

    def _plan_balance(self, members: list[Member]) -> bool:
        """Snapshot used bytes per active node; True when some node is well below the mean."""
        active = [m.spec for m in members if m.state == ACTIVE
                  and self._health.is_usable(m.spec.id)]
        self._used = {n.id: float(self._health.states[n.id].used_bytes) for n in active}
        self._mean = {}
        self._receivers = set()
        for role in {n.role for n in active}:
            ids = [n.id for n in active if n.role == role]
            mean = sum(self._used[i] for i in ids) / max(1, len(ids))
            self._mean[role] = mean
            gap = max(self.settings.min_gap_bytes, mean * self.settings.threshold)
            if mean > 0:
                self._receivers |= {i for i in ids if self._used[i] <= mean - gap}
        self._budget = self.settings.max_moves
        return bool(self._receivers) and self._budget > 0

    # planning one stripe -----------------------------------------------------------------------

    def _profile(self, part: PartLayout) -> Profile:
        return self._cfg.profile(part.profile) if part.profile in self._cfg.profiles \
            else self._cfg.profile()

    def _plan(self, man: Manifest, draining: dict[str, Member]) -> _Move | None:
        part = man.part
        by_id = {n.id: n for n in self._health.nodes}
        nodes = list(part.nodes)
        leaving = {i: nid for i, nid in enumerate(nodes) if nid in draining}
        for nid in leaving.values():
            self._seen[nid] = self._seen.get(nid, 0) + 1
        if leaving:
            profile = self._profile(part)
            zone_counts: dict[str, int] = {}
            for i, nid in enumerate(nodes):
                if nid and i not in leaving and nid in by_id:
                    zone_counts[by_id[nid].zone] = zone_counts.get(by_id[nid].zone, 0) + 1
            chosen = place(part.stripe_id, profile, self._health.placeable(),
                           exclude={n for n in nodes if n}, zone_counts=zone_counts,
                           count=len(leaving))
            if not chosen:
                return None
            return _Move(man, {i: (nid, dst) for (i, nid), dst
                               in zip(sorted(leaving.items()), chosen, strict=False)})
        if draining or self._budget <= 0:
            return None
        return self._plan_balance_move(man, by_id)

    def _plan_balance_move(self, man: Manifest, by_id: dict[str, NodeSpec]) -> _Move | None:
        part = man.part
        profile = self._profile(part)
        mean = self._mean.get(profile.role)
        if not mean:
            return None
        size = shard_file_bytes(part.size, part.segment_size, part.k)
        placed = [n for n in part.nodes if n]
        zones: dict[str, int] = {}
        for nid in placed:
            if nid in by_id:
                zones[by_id[nid].zone] = zones.get(by_id[nid].zone, 0) + 1
        receivers = sorted((self._used[nid], nid) for nid in self._receivers
                           if nid in by_id and by_id[nid].role == profile.role
                           and nid not in placed and self._used[nid] + size <= mean)
        if not receivers:
            return None
        donors = sorted(((self._used.get(nid, 0.0), i, nid) for i, nid in enumerate(part.nodes)
                         if nid in self._used and self._used[nid] - size >= mean), reverse=True)
        for _, dst_id in receivers:
            dz = by_id[dst_id].zone
            for _, i, src_id in donors:
                sz = by_id[src_id].zone
                if dz != sz and zones.get(dz, 0) + 1 > profile.m:
                    continue
                self._used[src_id] -= size
                self._used[dst_id] += size
                self._budget -= 1
                return _Move(man, {i: (src_id, by_id[dst_id])}, balance=True)
        return None

    # moving ------------------------------------------------------------------------------------

    async def _move_one(self, man: Manifest, index: int, src_id: str,
                        dst: NodeSpec) -> tuple[int, str]:
        """Copy (or, failing that, rebuild) one shard onto `dst`; (bytes, how). A rebuild
        from k sources is checked with the key (`_guard`)."""
        part = man.part
        src = next((n for n in self._health.nodes if n.id == src_id), None)
        if src is not None and self._health.is_usable(src_id):
            try:
                return await copy_shard(self._client, part, index, src, dst,
                                        self._throttle), "copied"
            except StorageError as exc:
                log.warning("copy of %s from %s failed (%s); rebuilding instead",
                            shard_id(part.stripe_id, index), src_id, exc)
        by_id = {n.id: n for n in self._health.nodes}
        sources = [(i, by_id[n]) for i, n in enumerate(part.nodes)
                   if i != index and n and n in by_id and self._health.is_usable(n)]
        res = await rebuild_shards(self._client, self._cpu, part, sources, {index: dst},
                                   self._throttle, pool=self._pool,
                                   guard=self._guard(man, [i for i, n in enumerate(part.nodes)
                                                           if n and not self._health.is_usable(n)]))
        if index not in res.written:
            raise StorageError(res.failed.get(index, "rebuild failed"))
        return res.bytes_written, "rebuilt"

    async def _execute(self, job: _Move, draining: dict[str, Member]) -> None:
        part = job.man.part
        written: dict[int, str] = {}
        nbytes = 0
        hows: list[str] = []

        async def one(i: int, src_id: str, dst: NodeSpec) -> None:
            nonlocal nbytes
            try:
                n, how = await self._move_one(job.man, i, src_id, dst)
            except StorageError as exc:
                self.stats.failed += 1
                log.warning("could not move shard %d of stripe %s to %s: %s", i,
                            part.stripe_id.hex(), dst.id, exc)
                return
            written[i] = dst.id
            nbytes += n
            hows.append(how)

        fence = await read_fence(self._meta, part.stripe_id)  # before any copy is written
        await asyncio.gather(*(one(i, s, d) for i, (s, d) in job.moves.items()))
        if not written:
            return
        outcome, conflicts = await commit_shard_moves(self._meta, part.stripe_id,
                                                      list(part.nodes), written, fence,
                                                      MapGuard(self._cfg, self._health))
        self.stats.commit_conflicts += conflicts
        self.stats.refused += outcome is Commit.REFUSED
        if outcome is not Commit.DONE:
            return
        self.stats.shards_moved += len(written)
        self.stats.bytes_moved += nbytes
        self.stats.copied += hows.count("copied")
        self.stats.rebuilt += hows.count("rebuilt")
        if job.balance:
            self.stats.balance_moves += len(written)
        for i, dst_id in written.items():
            self.stats.moved_to[dst_id] = self.stats.moved_to.get(dst_id, 0) + 1
            src_id = job.moves[i][0]
            if src_id in draining:
                self._moved[src_id] = self._moved.get(src_id, 0) + 1
                d = self.stats.draining.setdefault(
                    src_id, {"since": draining[src_id].since, "moved": 0})
                d["moved"] = int(d.get("moved", 0)) + 1

    async def _publish(self) -> None:
        self._note_pacing()
        self.stats.updated = time.time()
        await self._meta.put(STATS_KEY, pack(asdict(self.stats)))


async def read_stats(meta: MetadataStore) -> dict:
    """The last published rebalancer counters (empty when it never ran)."""
    return await read_counters(meta, STATS_KEY)


__all__ = ["RebalanceSettings", "RebalanceStats", "Rebalancer", "copy_shard", "read_stats"]
