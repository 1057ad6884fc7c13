"""A repair lane is free once a stripe's rebuilt shards are written: the next stripe's
rebuild starts while the previous one's manifest commit is still under way (the commit
holds no shard bytes). Simulated nodes, the real repair worker, one lane."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from storage.records import PartLayout
from storage.shards.ids import shard_id
from storage.workers import repair
from storage.workers.gcfence import Fence
from storage.workers.repair import RepairSettings, RepairWorker
from tests.sim.test_sim_repair import SEGMENT, Sim

ONE_LANE = RepairSettings(rate_bytes_s=0, down_grace_s=3600, sweep_interval_s=3600,
                          orphan_grace_s=3600, parallel=1)


async def test_next_rebuild_starts_while_the_last_one_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Sim(tmp_path, 41)
    await s.open(tmp_path)
    s.repair = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool, ONE_LANE)
    try:
        for i in range(2):
            await s.put(f"o{i}", 24 * SEGMENT + 7)  # shards > 320 KiB: the one streamed lane
        for m in await s.manifests():  # shard 0 of each stripe lost, whatever the placement
            p = m.part
            assert s.sim.lose(p.nodes[0], shard_id(p.stripe_id, 0))
            await s.repair.enqueue(p.stripe_id, "test: shard 0 lost", urgent=True)
        started: list[bytes] = []
        second = asyncio.Event()
        real_rebuild = repair.rebuild_shards

        async def rebuild(client: Any, cpu: Any, part: PartLayout, *a: Any,
                          **kw: Any) -> Any:
            started.append(part.stripe_id)
            if len(started) == 2:
                second.set()
            return await real_rebuild(client, cpu, part, *a, **kw)

        monkeypatch.setattr(repair, "rebuild_shards", rebuild)
        real_commit = s.repair._commit
        held: list[bool] = []

        async def commit(stripe_id: bytes, old: list[str | None],
                         written: dict[int, str], fence: Fence) -> bool:
            if not held:  # the first commit waits for the second stripe's rebuild to start
                held.append(True)
                await asyncio.wait_for(second.wait(), 60)  # the old code: never (one lane)
            return await real_commit(stripe_id, old, written, fence)

        monkeypatch.setattr(s.repair, "_commit", commit)
        assert await s.repair.queue_step()
        assert len(started) == 2
        assert s.repair.stats.shards_rebuilt == 2
        await s.check_redundant()
        assert await s.check_reads() == 2
    finally:
        await s.close()
