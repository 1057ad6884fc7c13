"""The one rule that names a refused write's cause (`storage.fullness.refused_for_space`):
full disks when the nodes not known full are fewer than the write quorum, what the nodes
say of their disks deciding which are, not the refusal's error text (review20a).

9 simulated nodes in 3 zones, 4+2 (write quorum 5). Each shard's attempts answer in turn
as its plan says: "ok" (written), "full" (the node's 507; its disk then has no free
byte), "down" (cannot connect; the node answers no health probe either). Where a plan runs
out, the attempt is "down". A node's health probe answers as its last attempt left it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage.config import NodeSpec
from storage.errors import NODE_DISK_FULL, QuorumNotReached
from storage.objects import PutOptions
from storage.shards.client import NodeError
from storage.shards.ids import parse_shard_id
from storage.shards.slot import ShardSlot
from storage.testing.simnodes import SimNodes
from tests.inproc import wired_cluster
from tests.unit.test_full_refusal_cause import _body, _cfg

Plan = dict[int, list[str]]


class Planned(SimNodes):
    def __init__(self, nodes: list[NodeSpec], plan: Plan, disks: dict[str, str]) -> None:
        super().__init__(nodes)
        self.plan = {i: list(a) for i, a in plan.items()}
        self.disks = dict(disks)  # node id -> "full" / "down" (else: room)
        self.attempts: list[tuple[str, int, str]] = []

    async def put_shard(self, node: NodeSpec, sid: str,
                        body: AsyncIterator[bytes | memoryview] | bytes | ShardSlot,
                        segments: int, length: int | None = None, *,
                        replace: bool = False) -> None:
        index = parse_shard_id(sid)[1]
        what = self.plan[index].pop(0) if self.plan.get(index) else "down"
        self.attempts.append((node.id, index, what))
        if what != "ok":
            self.disks[node.id] = what
        if what == "full":
            raise NodeError(node.id, f"PUT 507 {NODE_DISK_FULL}", 507)
        if what == "down":
            raise NodeError(node.id, "Cannot connect to host (injected)")
        await super().put_shard(node, sid, body, segments, length, replace=replace)

    async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]:
        if self.disks.get(node.id) == "down":
            raise NodeError(node.id, "Cannot connect to host (injected)")
        got = await super().health(node, timeout_s)
        return {**got, "free_bytes": 0} if self.disks.get(node.id) == "full" else got


def refusal(tmp_path: Path, plan: Plan, disks: dict[str, str] | None = None,
            down: tuple[str, ...] = ()) -> tuple[QuorumNotReached, list[tuple[str, int, str]]]:
    """A 1 MiB PUT (one whole shard each) on `Planned(plan, disks)` with the nodes `down`
    already marked down by the gateway: its refusal and the attempts."""
    async def scenario() -> tuple[QuorumNotReached, list[tuple[str, int, str]]]:
        cfg = _cfg(tmp_path)
        sim = Planned(list(cfg.nodes), plan, disks or {})
        async with wired_cluster(tmp_path, cfg, sim) as c:  # type: ignore[arg-type]
            for nid in down:  # two failures: down
                for _ in range(2):
                    c.stripes.health.report_failure(nid, "refused (injected)")
            b = await c.buckets.create("t", "bk")
            with pytest.raises(QuorumNotReached) as exc:
                await c.objects.put(b, "k", _body(bytes(1 << 20)),
                                    PutOptions(size_hint=1 << 20))
            return exc.value, sim.attempts
    return asyncio.run(scenario())


def test_a_full_target_whose_shard_a_spare_took_counts(tmp_path: Path) -> None:
    # Shard 2's target is full and its spare takes it; shards 3 and 4: target and spare
    # full; shard 5's target down (no spare left). 5 nodes full: 4 not known full, fewer
    # than the quorum, so full; without shard 2's target (whose shard was placed) it
    # would have been 5, the quorum (review20a finding 2).
    plan = {0: ["ok"], 1: ["ok"], 2: ["full", "ok"], 3: ["full", "full"],
            4: ["full", "full"], 5: ["down"]}
    refused, attempts = refusal(tmp_path, plan)
    assert sum(a[2] == "full" for a in attempts) == 5 and refused.succeeded == 3, attempts
    assert refused.full, (refused.causes, attempts)


def test_a_refusal_mostly_caused_by_stalls_is_not_called_full(tmp_path: Path) -> None:
    # 4 written; shard 4: target down, one spare full, the next down; shard 5: target and
    # spare down. One node full, 8 with room (or silent): "too few nodes". The rule before
    # counted the full spare into the quorum (4 + 1 = 5) and said full (finding 3).
    plan = {0: ["ok"], 1: ["ok"], 2: ["ok"], 3: ["ok"], 4: ["down", "full", "down"],
            5: ["down", "down"]}
    refused, attempts = refusal(tmp_path, plan)
    assert sum(a[2] == "full" for a in attempts) == 1 and refused.succeeded == 4, attempts
    assert not refused.full, (refused.causes, attempts)


def test_two_full_nodes_among_four_silent_ones_are_not_called_full(tmp_path: Path) -> None:
    # review20a's scenario: shard 2's target full (its spare takes it), shard 3's spare
    # full, 4 nodes down. 7 nodes not known full, more than the quorum: "too few nodes".
    plan = {0: ["ok"], 1: ["ok"], 2: ["full", "ok"], 3: ["down", "full"],
            4: ["down", "down"], 5: ["down"]}
    refused, attempts = refusal(tmp_path, plan)
    assert sum(a[2] == "full" for a in attempts) == 2 and refused.succeeded == 3, attempts
    assert not refused.full, (refused.causes, attempts)


@pytest.mark.parametrize(("disks", "full"), [
    ({f"n{i}": "full" for i in range(1, 10)}, True),  # down after no-space answers
    ({**{f"n{i}": "down" for i in range(1, 6)}, **{f"n{i}": "full" for i in range(6, 10)}},
     False),  # five nodes really down: four full ones could not have made the quorum
], ids=["all-full", "five-down"])
def test_a_placement_refusal_says_full_when_the_nodes_are(tmp_path: Path,
                                                         disks: dict[str, str],
                                                         full: bool) -> None:
    # Five of nine nodes marked down by the gateway (as two failed writes or a probe that
    # timed out do): the write is refused before any node is asked ("not enough healthy
    # nodes to place the stripe"), and said "too few nodes" though every disk was full.
    down = ("n1", "n2", "n3", "n4", "n5")
    refused, attempts = refusal(tmp_path, {}, disks, down)
    assert attempts == [] and refused.succeeded == 4, (refused, attempts)
    assert refused.full is full, refused.causes
