"""Shards a write's first targets did not take, and what the write's commit then owes repair.

A target that fails or stalls during a write leaves its shard index empty; before the write
is acknowledged that shard goes to a spare node (`Spares.settle` -> `_fill`): a one-segment
stripe resends the shard it still holds (the write path's resend), a streamed one rebuilds
it from the k or more shards just written (`Spares.rebuilder`). Without this a write
acknowledged at the write quorum (k+1) survived one more failure instead of m until repair
ran. `repair_entry` is the one check every writer's commit makes of where the shards went.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor

from storage.buffers import BufferPool
from storage.config import Config, NodeSpec, Profile
from storage.errors import QuorumNotReached, StorageError
from storage.fullness import refused_for_space
from storage.health import HealthTracker
from storage.keyspace import repair_key, urgent_repair_key
from storage.pipeline import StripeCodec
from storage.placement import place_spares, zone_safe
from storage.rebuild import Reference, rebuild_shards
from storage.records import PartLayout
from storage.shards.transport import NodeTransport

# (shard index -> spare node, where the stripe's shards are now) -> index -> None or error
Resend = Callable[[dict[int, NodeSpec], list[str | None]], Awaitable[dict[int, str | None]]]
# delete every shard of a stripe (`StripeStore.delete`): a refused write leaves none behind
Delete = Callable[[bytes, Sequence[str | None]], Awaitable[list[str]]]


class Spares:
    """A gateway process's spare fills: the write's outcome once its first targets answered,
    and the counts `/metrics` exports."""

    def __init__(self, cfg: Config, client: NodeTransport, health: HealthTracker,
                 cpu: Executor, stall_s: float, pool: BufferPool, delete: Delete) -> None:
        self._cfg = cfg
        self._client = client
        self._health = health
        self._cpu = cpu
        self._stall_s = stall_s
        self._pool = pool
        self._delete = delete
        self.spared = 0  # shards a failed target did not take, sent to a spare before the ack
        self.degraded = 0  # writes acknowledged with fewer than k+m shards (no spare left)

    def _nodes_by_id(self) -> dict[str, NodeSpec]:
        return {n.id: n for n in self._health.nodes}  # the live cluster map (membership)

    async def settle(self, codec: StripeCodec, profile: Profile, quorum: int,
                     outcomes: list[tuple[NodeSpec, str | None]],
                     resend: Resend, need: int) -> list[str | None]:
        """Report each shard write to the health tracker; send each shard a target did not
        take to a spare (`_fill`, through `resend`); the result if the write quorum holds
        on at least two zones (where the stripe's shards are), else delete what was written
        and raise.

        A refusal names one cause per shard left unwritten, with every node tried for it
        (its first target's error, then each spare's), and whether full disks are why
        (`refused_for_space`, shards of `need` bytes: the write path's one rule)."""
        for node, error in outcomes:
            if error is None:
                self._health.report_success(node.id)
            else:
                self._health.report_failure(node.id, error)
        nodes: list[str | None] = [n.id if e is None else None for n, e in outcomes]
        nodes += [None] * (profile.width - len(nodes))
        tried_on = {i: [e] for i, (_, e) in enumerate(outcomes) if e}  # index -> errors
        failed = [n.id for n, e in outcomes if e]
        if None in nodes:
            failed += await self._fill(codec, profile, nodes, failed, resend, tried_on)
        written = [n for n in nodes if n]
        # (a target removed from the map meanwhile is still known by its spec: its commit
        # refuses the write, `commit_nodes`)
        by_id = {**{n.id: n for n, _ in outcomes}, **self._nodes_by_id()}
        zones = {by_id[n].zone for n in written}
        if len(written) < quorum or len(zones) < min(2, len(self._cfg.zones)):
            try:
                await self._health.confirm(failed)  # before the client's retry
                full = len(written) < quorum and await refused_for_space(
                    self._health, profile.role, quorum, need, written)
            finally:  # a client gone during the probe leaves no shards behind either
                await self._delete(codec.stripe_id, nodes)
            causes = [", then ".join(tried_on.get(i) or ["no node to place it on"])
                      for i, n in enumerate(nodes) if n is None]
            raise QuorumNotReached(quorum, len(written), profile.width,
                                   causes or [f"its shards span {len(zones)} zone(s)"],
                                   full=full)
        if len(written) < profile.width:
            self.degraded += 1  # acknowledged short: its commit queues it as urgent repair
        return nodes

    def repair_entry(self, stripe_id: bytes, nodes: Sequence[str | None], m: int) -> bytes | None:
        """The repair queue key the commit of a just-written stripe must put, or None: a shard
        missing (acknowledged short, no spare could take it) is urgent, read first; complete
        but not zone-safe (a first placement or a spare that spilled) goes to the queue. The
        one check every writer's commit (objects, volume extents, journal segments) uses, so
        repair meets such a stripe at once rather than at the background sweep's pace."""
        if None in nodes:
            return urgent_repair_key(stripe_id)
        if not zone_safe(nodes, self._health.nodes, m):
            return repair_key(stripe_id)
        return None

    async def _fill(self, codec: StripeCodec, profile: Profile, nodes: list[str | None],
                    failed: Sequence[str], resend: Resend,
                    tried_on: dict[int, list[str]]) -> list[str]:
        """Put each shard missing from `nodes` (its target failed or stalled, or there was
        none) on a spare node before the write is acknowledged, updating `nodes` in place:
        the best-ranked usable node that keeps the zone rule (`place_spares`; another one
        when none does, as the first placement spills). A spare that fails too is replaced
        by the next, at most m rounds. Without this a write acknowledged at the write quorum
        (k+1) survived one more failure instead of m until repair ran. Each failed spare's
        error is added to `tried_on` (shard index -> its attempts' errors); the spares that
        failed are returned (the refusal probes them, as its first targets).

        The whole fill has one deadline, the stall limit: spares that stall too cannot keep
        the client waiting (1 + m) stall limits after its body (past boto3's 60 s read
        timeout). Past it the fill stops, and `settle` acknowledges at the quorum (short:
        queued urgent) or refuses below it; a spare cut off mid-shard leaves an orphan copy
        the manifest does not name, which the sweep collects."""
        by_id = self._nodes_by_id()
        tried = set(failed)
        spares_failed: list[str] = []
        deadline = asyncio.get_running_loop().time() + self._stall_s
        for _ in range(profile.m):
            missing = [i for i, n in enumerate(nodes) if n is None]
            held = [by_id[n] for n in nodes if n is not None and n in by_id]
            spares = place_spares(codec.stripe_id, profile, self._health.placeable(), held,
                                  tried, len(missing)) if missing else []
            if not spares:
                return spares_failed
            targets = dict(zip(missing, spares, strict=False))
            tried.update(n.id for n in spares)
            try:
                async with asyncio.timeout_at(deadline):
                    errors = await resend(targets, list(nodes))
            except TimeoutError:
                for i, node in targets.items():
                    error = (f"spare {node.id} did not confirm within the fill's "
                             f"{self._stall_s:.0f}s")
                    self._health.report_failure(node.id, error)
                    tried_on.setdefault(i, []).append(error)
                    spares_failed.append(node.id)
                return spares_failed
            for i, node in targets.items():
                error = errors.get(i, "not sent")
                if error is None:
                    self._health.report_success(node.id)
                    nodes[i] = node.id
                    self.spared += 1
                else:
                    self._health.report_failure(node.id, error)
                    tried_on.setdefault(i, []).append(  # (a node's error names it)
                        f"spare {error}" if error.startswith(f"node {node.id}:")
                        else f"spare {node.id}: {error}")
                    spares_failed.append(node.id)
        return spares_failed

    def rebuilder(self, codec: StripeCodec, size: int) -> Resend:
        """A streamed stripe's resend: its shards are not kept (memory stays flat whatever
        the size), so a missing one is rebuilt from the k or more just written, as repair
        does (`rebuild_shards`: k+1 sources must agree when there are that many; a
        segment read from only k is authenticated with the write's own key, `guard`, and
        without a key the rebuild is not tried: a lying source among k would be copied into
        every rebuilt shard). Nothing is read or coded unless a target failed."""
        async def guard() -> Reference | None:
            return codec.reference

        async def resend(targets: dict[int, NodeSpec],
                         nodes: list[str | None]) -> dict[int, str | None]:
            by_id = self._nodes_by_id()
            part = PartLayout(number=0, size=size, etag="", stripe_id=codec.stripe_id,
                              k=codec.codec.k, m=codec.codec.m,
                              segment_size=codec.segment_size, nodes=nodes)
            sources = [(i, by_id[n]) for i, n in enumerate(nodes)  # (a source removed from
                       if n is not None and n in by_id]  # the map meanwhile: not read)
            if len(sources) <= part.k and codec.cipher is None:
                return dict.fromkeys(targets, "k sources and no key: a rebuild is unchecked")
            try:
                res = await rebuild_shards(self._client, self._cpu, part, sources, targets,
                                           stall_s=self._stall_s, pool=self._pool,
                                           guard=guard)
            except StorageError as exc:
                return dict.fromkeys(targets, str(exc)[:200] or "rebuild failed")
            return {i: None if i in res.written else res.failed.get(i, "failed")
                    for i in targets}
        return resend

