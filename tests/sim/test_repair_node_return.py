"""A node's return is acted on at once: its lost shards are found by a sweep started when it
comes back (not `sweep_interval_s` later), and queue entries deferred while no zone-safe
node was up become due when one returns (not `RETRY_S` later). Simulated nodes, the real
repair worker; no clock advances in these tests, so the old timers could not fire."""

from __future__ import annotations

from pathlib import Path

from storage.health import DOWN, OUT
from storage.keyspace import REPAIR, space
from storage.workers.repair import RepairSettings, RepairWorker
from tests.sim.test_sim_repair import SEGMENT, Sim

SLOW = RepairSettings(rate_bytes_s=0, down_grace_s=3600, sweep_interval_s=3600,
                      orphan_grace_s=3600)


async def _sim(tmp_path: Path, seed: int) -> Sim:
    s = Sim(tmp_path, seed)
    await s.open(tmp_path)
    s.repair = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool, SLOW)
    return s


async def _down(s: Sim, nid: str) -> None:
    s.sim.down.add(nid)
    s.health.states[nid].state = DOWN


async def _back(s: Sim, nid: str) -> None:
    s.sim.down.discard(nid)
    await s.health.probe_once()


async def test_wiped_node_that_returns_is_swept_at_once(tmp_path: Path) -> None:
    s = await _sim(tmp_path, 21)
    try:
        for i in range(4):
            await s.put(f"o{i}", 2 * SEGMENT + 3)
        await s.repair.step()  # the first pass: nothing to do, the next one in an hour
        assert s.repair.stats.sweep_passes == 1
        # a node that holds shards of these stripes (placement is random: a fixed id held
        # none of them about once in 81 runs, and then nothing was there to rebuild)
        victim = (await s.manifests())[0].part.nodes[0]
        await _down(s, victim)
        await s.repair.step()  # down within its grace: its shards may come back
        s.sim.wipe(victim)  # ...but it returns empty (a replaced disk)
        await _back(s, victim)
        for _ in range(6):
            await s.repair.step()
        assert s.repair.stats.sweep_passes >= 2
        assert s.repair.stats.shards_rebuilt >= 1
        await s.check_redundant()
        assert await s.check_reads() == len(s.data)
    finally:
        await s.close()


async def test_entry_deferred_for_want_of_a_zone_safe_node_is_due_when_one_returns(
        tmp_path: Path) -> None:
    s = await _sim(tmp_path, 22)
    try:
        await s.put("x", 2 * SEGMENT + 3)
        part = (await s.manifests())[0].part
        await s.repair.step()
        # Shard 0's node is out for good; the only zone-safe home for the shard is the one
        # node of that zone the stripe does not use, and that node is down (in its grace).
        gone = part.nodes[0]
        zone = s.cfg.node(gone).zone
        spare = next(n.id for n in s.cfg.nodes if n.zone == zone and n.id not in part.nodes)
        await _down(s, gone)
        s.health.states[gone].state = OUT
        await _down(s, spare)
        await s.repair.enqueue(part.stripe_id, "test: node out")
        await s.repair.step()
        assert s.repair.stats.shards_rebuilt == 0
        assert await s.meta.range(*space(REPAIR), limit=1)  # deferred (30 s), not dropped
        await _back(s, spare)
        for _ in range(4):
            await s.repair.step()
        assert s.repair.stats.shards_rebuilt == 1
        assert not await s.meta.range(*space(REPAIR), limit=1)
        await s.check_redundant()
    finally:
        await s.close()
