"""Repair and the rebalancer commit a shard's new place under the same membership rule as a
write (`storage/commit_nodes.py`, `MapGuard` in `storage/workers/manifests.py`): a target
node removed from the cluster map after it was chosen (another gateway's `tessera node
remove`, this process's map not yet refreshed) makes the move give up, its copy queued for
collection, instead of committing a stripe that names a node that is gone. A drain of the
target meanwhile changes nothing: the move commits. The real workers over simulated nodes;
the removal is written to the store between choosing the target and the commit, so the
order is fixed (no timing)."""

from __future__ import annotations

from storage import membership as ms
from storage.keyspace import GC, space
from storage.records import unpack
from storage.workers.gcfence import read_fence
from storage.workers.manifests import Commit
from storage.workers.rebalance import Rebalancer, _Move
from tests.sim.test_sim_repair import SEGMENT, sim_factory  # noqa: F401 - the fixture


async def _stripe_and_spare(s):  # noqa: ANN001, ANN202 - the Sim of test_sim_repair
    await s.put("k", SEGMENT + 3)
    man = (await s.manifests())[0]
    p = man.part
    spare = next(n for n in s.cfg.nodes
                 if n.id not in p.nodes and n.zone == s.cfg.node(p.nodes[0]).zone)
    await ms.refresh(s.meta, s.cfg, s.health)  # the map as the store has it (epoch 0)
    assert s.health.member_epoch == 0 and s.health.is_member(spare.id)
    return man, p, spare


async def _queued_for_collection(s, node: str) -> bool:  # noqa: ANN001
    return any(node in unpack(it.value).get("nodes", [])
               for it in await s.meta.range(*space(GC), limit=1000))


async def test_a_repair_commit_naming_a_node_removed_since_gives_up(sim_factory) -> None:  # noqa: F811
    s = await sim_factory(61)
    man, p, spare = await _stripe_and_spare(s)
    fence = await read_fence(s.meta, p.stripe_id)
    await ms.set_state(s.meta, s.cfg, spare.id, ms.REMOVED)  # in the store only
    assert s.health.is_member(spare.id)  # this process's map is stale
    outcome = await s.repair._commit(p.stripe_id, list(p.nodes), {0: spare.id}, fence)
    assert outcome is Commit.GAVE_UP
    now = (await s.objects.head(s.bucket, "k")).parts[0]
    assert list(now.nodes) == list(p.nodes), "the stripe names a removed node"
    assert await _queued_for_collection(s, spare.id)
    assert not s.health.is_member(spare.id)  # the failed commit re-read the map
    assert await s.read("k") == s.data["k"]


async def test_a_repair_commit_to_a_node_drained_since_commits(sim_factory) -> None:  # noqa: F811
    s = await sim_factory(62)
    man, p, spare = await _stripe_and_spare(s)
    fence = await read_fence(s.meta, p.stripe_id)
    await ms.set_state(s.meta, s.cfg, spare.id, ms.DRAINING)  # does not move the epoch
    outcome = await s.repair._commit(p.stripe_id, list(p.nodes), {0: spare.id}, fence)
    assert outcome is Commit.DONE
    now = (await s.objects.head(s.bucket, "k")).parts[0]
    assert now.nodes[0] == spare.id


async def test_a_rebalance_move_to_a_node_removed_since_gives_up(sim_factory) -> None:  # noqa: F811
    s = await sim_factory(63)
    man, p, spare = await _stripe_and_spare(s)
    rebalance = Rebalancer(s.cfg, s.meta, s.sim, s.health, s.pool)
    real = rebalance._move_one

    async def move_then_remove(*a, **k):  # noqa: ANN002, ANN003, ANN202
        out = await real(*a, **k)  # the copy is on the target; then the target is removed
        await ms.set_state(s.meta, s.cfg, spare.id, ms.REMOVED)
        return out

    setattr(rebalance, "_move_one", move_then_remove)  # noqa: B010 - an instance patch
    await rebalance._execute(_Move(man, {0: (str(p.nodes[0]), spare)}), {})
    now = (await s.objects.head(s.bucket, "k")).parts[0]
    assert list(now.nodes) == list(p.nodes), "the move committed a removed node"
    assert rebalance.stats.shards_moved == 0
    assert await _queued_for_collection(s, spare.id)
    assert await s.read("k") == s.data["k"]
