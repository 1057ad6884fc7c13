"""Review20a: `QuorumNotReached.full` says every node that answered "no space" counts,
first targets and spares alike. A first target that was full on a shard a spare then took
is left out of the refusal's causes (they name only unplaced shards), so it is not counted.

9 nodes, 4+2 (quorum 5). Per shard, the answer of each attempt in turn: shards 0 and 1
written; shard 2: its target full, its spare takes it; shard 3: target unreachable, spare
full; shard 4: target and spare unreachable; shard 5: target unreachable (no spare left).
Written 3; nodes that answered "no space": 2 (shard 2's target, shard 3's spare): 3 + 2 = 5,
the quorum, so by the rule the refusal is 'storage full'."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.errors import NODE_DISK_FULL, QuorumNotReached
from storage.objects import PutOptions
from storage.shards.client import NodeError
from storage.shards.ids import parse_shard_id
from storage.shards.slot import ShardSlot
from storage.testing.simnodes import SimNodes
from tests.inproc import wired_cluster
from tests.unit.test_full_refusal_cause import _body, _cfg

PLAN = {0: ["ok"], 1: ["ok"], 2: ["full", "ok"], 3: ["down", "full"], 4: ["down", "down"],
        5: ["down"]}


class Planned(SimNodes):
    def __init__(self, nodes: list) -> None:  # type: ignore[type-arg]
        super().__init__(nodes)
        self.plan = {i: list(a) for i, a in PLAN.items()}
        self.attempts: list[tuple[str, int, str]] = []

    async def put_shard(self, node, sid: str,  # type: ignore[no-untyped-def, override]
                        body: AsyncIterator[bytes | memoryview] | bytes | ShardSlot,
                        segments: int, length: int | None = None, *,
                        replace: bool = False) -> None:
        index = parse_shard_id(sid)[1]
        what = self.plan[index].pop(0) if self.plan[index] else "down"
        self.attempts.append((node.id, index, what))
        if what == "full":
            raise NodeError(node.id, f"PUT 507 {NODE_DISK_FULL}", 507)
        if what == "down":
            raise NodeError(node.id, "Cannot connect to host (injected)")
        await super().put_shard(node, sid, body, segments, length, replace=replace)


def test_a_full_target_whose_shard_a_spare_took_still_counts(tmp_path: Path) -> None:
    async def scenario() -> tuple[QuorumNotReached, list[tuple[str, int, str]]]:
        cfg = _cfg(tmp_path)
        sim = Planned(list(cfg.nodes))
        async with wired_cluster(tmp_path, cfg, sim) as c:  # type: ignore[arg-type]
            b = await c.buckets.create("t", "bk")
            with pytest.raises(QuorumNotReached) as exc:
                await c.objects.put(b, "k", _body(bytes(1 << 20)),
                                    PutOptions(size_hint=1 << 20))
            return exc.value, sim.attempts

    refused, attempts = asyncio.run(scenario())
    assert sum(a[2] == "full" for a in attempts) == 2 and refused.succeeded == 3, attempts
    assert refused.full, (refused.causes, attempts)
