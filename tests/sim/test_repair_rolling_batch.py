"""An urgent repair batch tops itself up from the urgent queue as its gates free up: one
queue step repairs more than `BATCH` queued stripes (for at most `ROLL_S`), instead of
draining its lanes every `BATCH` stripes. Simulated nodes, the real repair worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.keyspace import REPAIR, space
from storage.shards.ids import shard_id
from storage.workers import repair, repair_batch
from tests.sim.test_sim_repair import SEGMENT, Sim

STRIPES = 7


async def _queued_losses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sim:
    """STRIPES stripes, each with shard 0 lost (whatever the placement) and queued urgent;
    batches of 2 entries."""
    monkeypatch.setattr(repair, "BATCH", 2)
    monkeypatch.setattr(repair_batch, "BATCH", 2)
    s = Sim(tmp_path, 31)
    await s.open(tmp_path)
    for i in range(STRIPES):
        await s.put(f"o{i}", 2 * SEGMENT + 5)
    for m in await s.manifests():
        p = m.part
        assert s.sim.lose(p.nodes[0], shard_id(p.stripe_id, 0))
        await s.repair.enqueue(p.stripe_id, "test: shard 0 lost", urgent=True)
    return s


async def test_one_urgent_step_repairs_more_than_a_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await _queued_losses(tmp_path, monkeypatch)
    try:
        assert await s.repair.queue_step()
        assert s.repair.stats.shards_rebuilt == STRIPES  # the old code: 2 (one batch)
        assert not await s.meta.range(*space(REPAIR), limit=1)
        await s.check_redundant()
        assert await s.check_reads() == STRIPES
    finally:
        await s.close()


async def test_top_ups_stop_after_roll_s(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    s = await _queued_losses(tmp_path, monkeypatch)
    monkeypatch.setattr(repair_batch, "ROLL_S", 0.0)
    try:
        assert await s.repair.queue_step()
        assert s.repair.stats.shards_rebuilt == 2  # the first batch only: the step ends
        for _ in range(STRIPES):  # the rest in later steps
            await s.repair.queue_step()
        assert s.repair.stats.shards_rebuilt == STRIPES
        await s.check_redundant()
    finally:
        await s.close()
