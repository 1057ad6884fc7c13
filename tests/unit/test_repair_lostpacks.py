"""packs22: the repair sweep clears a node's lost-pack report only when nothing a lost pack
held can still be missing: a whole pass began after the node's start, and the repair queue
is empty. A pass that began before the node started, or a stripe still queued, clears
nothing (the report stays until repair is done or an operator acknowledges it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from storage.config import NodeSpec
from storage.keyspace import repair_key
from storage.metadata import Txn
from storage.metadata.sqlite import SqliteStore
from storage.records import pack
from storage.workers.repair_lostpacks import SKEW_S, clear_repaired_losses

NODE = NodeSpec(id="n1", zone="az1", address="127.0.0.1:1")


class _Node:
    """A node's health and lost-pack acknowledgement, as the transport answers them."""

    def __init__(self, started: float, now: float) -> None:
        self.lost, self.started, self.now, self.acked = [4, 5], started, now, []

    async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]:
        return {"packs_lost": self.lost, "started": self.started, "now": self.now}

    async def ack_lost_packs(self, node: NodeSpec, packs: list[int]) -> list[int]:
        self.acked.append(list(packs))
        self.lost = [p for p in self.lost if p not in packs]
        return list(packs)


async def test_a_loss_clears_only_after_a_later_whole_pass_with_nothing_queued(
        tmp_path: Path) -> None:
    meta = await SqliteStore.open(tmp_path / "m.db")
    try:
        clock_off = 1000.0  # the node's clock is 1000 s ahead of this host's
        node = _Node(started=clock_off + 100.0, now=clock_off + 200.0)
        # a pass that began before the node's start (host clock 100) clears nothing
        assert await clear_repaired_losses(meta, node, [NODE], 100.0, lambda: 200.0) == {}  # type: ignore[arg-type]
        assert await clear_repaired_losses(meta, node, [NODE], 100.0 + SKEW_S / 2, lambda: 200.0) == {}  # type: ignore[arg-type]
        stripe = b"\x01" * 16
        await meta.txn(Txn(puts={repair_key(stripe): pack({"reason": "t", "queued": 1.0})}))
        # a later pass, but a stripe still queued: nothing
        assert await clear_repaired_losses(meta, node, [NODE], 150.0, lambda: 200.0) == {}  # type: ignore[arg-type]
        assert node.acked == []
        await meta.txn(Txn(deletes=[repair_key(stripe)]))
        assert await clear_repaired_losses(meta, node, [NODE], 150.0, lambda: 200.0) == {"n1": [4, 5]}  # type: ignore[arg-type]
        assert node.lost == []
    finally:
        await meta.close()


class _SlowNode(_Node):
    """Counts the health calls in flight: each yields to the loop once before it answers."""

    inflight = peak = 0

    async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]:
        cls = _SlowNode
        cls.inflight += 1
        cls.peak = max(cls.peak, cls.inflight)
        await asyncio.sleep(0)  # a yield (an answer on its way), not a wait for time
        cls.inflight -= 1
        return await super().health(node, timeout_s)


async def test_the_nodes_are_asked_at_once_not_one_by_one(tmp_path: Path) -> None:
    """review22e L7: one slow node's health call (2 s timeout) no longer delays the next."""
    meta = await SqliteStore.open(tmp_path / "m.db")
    try:
        nodes = [NodeSpec(id=f"n{i}", zone="az1", address=f"127.0.0.1:{i + 1}")
                 for i in range(3)]
        node = _SlowNode(started=0.0, now=100.0)
        node.lost = []
        assert await clear_repaired_losses(meta, node, nodes, 150.0, lambda: 200.0) == {}  # type: ignore[arg-type]
        assert _SlowNode.peak == 3
    finally:
        await meta.close()
