"""A repair batch whose lease changed hands stops at the first commit the store refuses
(LeaseFenced): it starts no more rebuilds, each of which would read and write shards only to
have its commit refused too (review19g, finding 2). Simulated nodes, the real repair worker
with one lane, a real SQLite store and real leases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storage.leases import Leases
from storage.metadata.fence import LeaseFenced
from storage.records import PartLayout
from storage.shards.ids import shard_id
from storage.workers import repair
from storage.workers.repair import RepairWorker
from storage.workers.stepfence import StepFence
from tests.sim.test_repair_lane_commit import ONE_LANE
from tests.sim.test_sim_repair import SEGMENT, Sim

STRIPES = 5


async def test_a_fenced_batch_starts_no_more_rebuilds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Sim(tmp_path, 43)
    await s.open(tmp_path)
    s.repair = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool, ONE_LANE)
    try:
        for i in range(STRIPES):
            await s.put(f"o{i}", 24 * SEGMENT + 7)  # shards > 320 KiB: the one streamed lane
        for m in await s.manifests():  # shard 0 of each stripe lost
            p = m.part
            assert s.sim.lose(p.nodes[0], shard_id(p.stripe_id, 0))
            await s.repair.enqueue(p.stripe_id, "test: shard 0 lost", urgent=True)
        started: list[bytes] = []
        real_rebuild = repair.rebuild_shards

        async def rebuild(client: Any, cpu: Any, part: PartLayout, *a: Any, **kw: Any) -> Any:
            started.append(part.stripe_id)
            return await real_rebuild(client, cpu, part, *a, **kw)

        monkeypatch.setattr(repair, "rebuild_shards", rebuild)
        lease = await Leases(s.meta).acquire("repair", "host/a:1/10", 60)
        assert lease is not None  # taken over; the old holder's clock still says valid
        assert await Leases(s.meta).acquire("repair", "host/a:1/11", 60, succeeds="host/a:1/")
        assert lease.valid()
        with pytest.raises(LeaseFenced):
            async with StepFence(lease).step():
                await s.repair.queue_step()
        # the first stripe's commit is refused while (one lane, freed at its commit) the
        # second one rebuilds; the old code went on through all of them
        assert 1 <= len(started) <= 2, len(started)
        assert s.repair.stats.shards_rebuilt == 0
    finally:
        await s.close()
