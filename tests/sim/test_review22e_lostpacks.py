"""review22e: the repair sweep's automatic clear of a node's lost-pack report
(`storage.workers.repair_lostpacks`) must not clear it after a pass that never checked the
node's shards: a node down (within its grace) while the pass assessed its stripes counts
those shards `unknown`, so nothing is queued and the queue is empty at the pass's end,
yet none of the shards the lost pack held was looked at, let alone rebuilt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storage.config import NodeSpec
from storage.workers.repair import RepairSettings, RepairWorker
from tests.sim.test_repair_node_return import _back, _down
from tests.sim.test_sim_repair import SEGMENT, Sim

SLOW = RepairSettings(rate_bytes_s=0, down_grace_s=3600, sweep_interval_s=3600,
                      orphan_grace_s=3600, sweep_batch=1)


async def test_a_pass_that_never_checked_the_node_does_not_clear_its_lost_packs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Sim(tmp_path, 22)
    await s.open(tmp_path)
    s.repair = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool, SLOW)
    try:
        for i in range(2):
            await s.put(f"o{i}", 2 * SEGMENT + 3)
        victim = (await s.manifests())[0].part.nodes[0]
        acked: list[list[int]] = []
        real_health = s.sim.health

        async def health(node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]:
            h = await real_health(node, timeout_s)
            return {**h, "packs_lost": [7]} if node.id == victim and not acked else h

        async def ack(node: NodeSpec, packs: list[int]) -> list[int]:
            acked.append(list(packs))
            return list(packs)

        monkeypatch.setattr(s.sim, "health", health)
        monkeypatch.setattr(s.sim, "ack_lost_packs", ack)
        s.sim.wipe(victim)  # its restart found pack 7 gone: every shard it held is missing
        await _down(s, victim)  # ...and it is down (within its grace) while the pass runs
        while await s.repair.sweep_step():  # a stripe a step: each one `unknown` there
            checked = s.repair.stats.sweep_checked
            if checked >= len(s.data):  # every stripe assessed; back before the pass ends
                await _back(s, victim)
        assert s.repair.stats.sweep_passes == 1
        missing = [m.part.stripe_id.hex() for m in await s.manifests()
                   if victim in m.part.nodes]
        print("pass done; victim's stripes never checked there:", missing,
              "lost packs acked:", acked)
        assert acked == [], "lost pack 7 cleared though no shard of it was checked"
    finally:
        await s.close()
