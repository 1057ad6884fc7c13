"""The repair sweep assesses a whole page of stripes at once, so the stats bound for one node
share batch requests (`NodeBatcher`: up to 64 ops each) instead of going out one or two per
stripe: every stat of a page is asked before the first one is answered. Simulated nodes, the
real repair worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from storage.config import NodeSpec
from storage.testing.simnodes import SimNodes
from storage.workers.repair import RepairSettings, RepairWorker
from tests.sim.test_sim_repair import SEGMENT, Sim

STRIPES = 40


class HeldStats(SimNodes):
    """Holds every stat until `want` are waiting (or `give_up_s` passed), counting the most
    that were waiting at once."""

    def __init__(self, nodes: list[NodeSpec], want: int, give_up_s: float = 10.0) -> None:
        super().__init__(nodes)
        self.want = want
        self.give_up_s = give_up_s
        self.waiting = 0
        self.peak = 0
        self.gate = asyncio.Event()

    async def stat_shard(self, node: NodeSpec, sid: str) -> dict[str, Any] | None:
        self.waiting += 1
        self.peak = max(self.peak, self.waiting)
        if self.waiting >= self.want:
            self.gate.set()
        try:  # a failure path only: the old code never has `want` stats out at once
            await asyncio.wait_for(self.gate.wait(), self.give_up_s)
        except TimeoutError:
            self.gate.set()
        self.waiting -= 1
        return await super().stat_shard(node, sid)


async def test_sweep_asks_a_pages_stats_at_once(tmp_path: Path) -> None:
    s = Sim(tmp_path, 31)
    await s.open(tmp_path)
    try:
        for i in range(STRIPES):
            await s.put(f"o{i}", SEGMENT + 7)
        held = HeldStats(list(s.cfg.nodes), want=STRIPES * 6)
        held.files, held.mtime = s.sim.files, s.sim.mtime
        worker = RepairWorker(s.cfg, s.meta, held, s.health, s.pool,
                              RepairSettings(rate_bytes_s=0, sweep_interval_s=3600,
                                             sweep_batch=128))
        assert await worker.sweep_step() is False  # one page: the whole pass
        assert worker.stats.sweep_checked == STRIPES
        assert held.peak == STRIPES * 6  # every shard of every stripe asked at once
    finally:
        await s.close()
