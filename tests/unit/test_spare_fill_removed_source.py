"""review20b L5: a streamed write whose first target fails, while another of its targets
(one that took its shard) has just left this gateway's cluster map (a `tessera node
remove` applied meanwhile), rebuilds the missing shard for a spare from the sources the map
still has. `Spares.rebuilder` looked every source up in the map: a KeyError, which is no
StorageError, so the client got 500 InternalError. Now the write is refused cleanly (its
commit names a removed node: NodeRemoved, S3 503) and nothing is committed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from storage import objects as objects_module
from storage.config import NodeSpec
from storage.errors import NodeRemoved, ObjectNotFound, StorageError
from storage.objects import PutOptions
from storage.placement import place_for_write
from storage.shards.client import NodeError
from storage.shards.slot import ShardSlot
from storage.testing.simnodes import SimNodes
from tests.inproc import wired_cluster
from tests.unit.test_write_spares import SIZES, _body, _cfg

STRIPE = bytes(range(16))


class FailsAndRemoves(SimNodes):
    """`failing` takes a shard's whole body, then fails its commit (507); just before, the
    gateway's map loses `removed` (which took its shard)."""

    def __init__(self, nodes: list[NodeSpec], failing: str, removed: str) -> None:
        super().__init__(nodes)
        self.failing, self.removed = failing, removed
        self.health: Any = None

    async def put_shard(self, node: NodeSpec, sid: str,
                        body: AsyncIterator[bytes | memoryview] | bytes | ShardSlot,
                        segments: int, length: int | None = None, *,
                        replace: bool = False) -> None:
        if node.id == self.failing and not isinstance(body, (bytes, ShardSlot)):
            async for _ in body:
                pass
            keep = [n for n in self.health.nodes if n.id != self.removed]
            self.health.set_nodes(keep, {n.id for n in keep})  # the removal applied
            raise NodeError(node.id, "PUT 507 no space left at commit (injected)", 507)
        await super().put_shard(node, sid, body, segments, length, replace=replace)


def test_a_source_removed_during_a_spare_fill_is_a_clean_refusal(tmp_path: Path) -> None:
    async def scenario() -> None:
        cfg = _cfg(tmp_path)
        targets = place_for_write(STRIPE, cfg.profile("standard"), list(cfg.nodes))
        sim = FailsAndRemoves(list(cfg.nodes), targets[5].id, targets[0].id)
        async with wired_cluster(tmp_path, cfg, sim) as c:  # type: ignore[arg-type]
            sim.health = c.health
            b = await c.buckets.create("t", "bk")
            data = random.Random(5).randbytes(SIZES["streamed"])
            with pytest.raises(StorageError) as refused:  # (a KeyError before: 500)
                await c.objects.put(b, "k", _body(data), PutOptions(size_hint=len(data)))
            assert isinstance(refused.value, NodeRemoved), refused.value
            with pytest.raises(ObjectNotFound):
                await c.objects.head(b, "k")

    with mock.patch.object(objects_module, "new_stripe_id", lambda: STRIPE):
        asyncio.run(scenario())
