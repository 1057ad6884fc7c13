"""review19d: a streamed write whose rebuild for the spares reads only k sources must not
acknowledge shards that a lying source made wrong.

Two targets of a streamed (multi-segment) stripe fail at commit, after taking the whole
body: the write quorum (k+1) is not met, but `Spares.settle` calls `_fill` before the quorum
check, and `Spares.rebuilder` rebuilds the two missing shards from the k just written with no
comparison (k+1 sources) and no key check, although the gateway holds the key. One of
those k sources answers that one read with wrong bytes under valid checksums (a lying
shard, the threat ARCHITECTURE names). On main before durable19 the write was refused
(QuorumNotReached: the client retries); on durable19 it is acknowledged with two wrong
parity shards, and loses data when two honest nodes go down (any m must be survivable).
A write acknowledged with fewer shards (a rebuild refused, no spare left) must still
read back with any (shards held - k) of them down.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from pathlib import Path
from unittest import mock

from storage import objects as objects_module
from storage.config import NodeSpec
from storage.errors import QuorumNotReached, StorageError
from storage.objects import PutOptions
from storage.placement import place_for_write
from storage.shards.client import NodeError
from storage.shards.format import ShardHeader
from storage.shards.slot import ShardSlot
from storage.testing.simnodes import SimNodes
from tests.inproc import wired_cluster
from tests.unit.test_write_spares import SIZES, _body, _cfg, _read

STRIPE = bytes(range(16))


class CommitFailsOneLies(SimNodes):
    """`commit` nodes take a shard's whole body, then fail its commit (507: disk full at
    fsync); `liar` answers its first frame read with one flipped byte per block (valid
    checksums: the lie is in the bytes), then honestly."""

    def __init__(self, nodes: list[NodeSpec], commit: set[str], liar: str) -> None:
        super().__init__(nodes)
        self.commit, self.liar, self.lied = commit, liar, False

    async def put_shard(self, node: NodeSpec, sid: str,
                        body: AsyncIterator[bytes | memoryview] | bytes | ShardSlot,
                        segments: int, length: int | None = None, *,
                        replace: bool = False) -> None:
        if node.id in self.commit and not isinstance(body, (bytes, ShardSlot)):
            async for _ in body:  # the whole body taken: the commit fails
                pass
            raise NodeError(node.id, "PUT 507 no space left at commit (injected)", 507)
        await super().put_shard(node, sid, body, segments, length, replace=replace)

    async def read_frames(self, node: NodeSpec, sid: str, expect: ShardHeader, first: int,
                          count: int) -> AsyncIterator[tuple[int, bytes]]:
        lie = node.id == self.liar and not self.lied
        self.lied = self.lied or lie
        async for seg, block in super().read_frames(node, sid, expect, first, count):
            if lie:
                b = bytearray(block)
                b[0] ^= 0x40
                block = bytes(b)
            yield seg, block


def test_rebuild_from_only_k_sources_never_acknowledges_a_lie(tmp_path: Path) -> None:
    async def scenario() -> None:
        cfg = _cfg(tmp_path)
        targets = place_for_write(STRIPE, cfg.profile("standard"), list(cfg.nodes))
        sim = CommitFailsOneLies(list(cfg.nodes), {targets[4].id, targets[5].id},
                                 targets[0].id)
        async with wired_cluster(tmp_path, cfg, sim) as c:  # type: ignore[arg-type]
            b = await c.buckets.create("t", "bk")
            data = random.Random(7).randbytes(SIZES["streamed"])
            try:
                await c.objects.put(b, "k", _body(data), PutOptions(size_hint=len(data)))
            except QuorumNotReached:
                return  # refused: the client retries; nothing acknowledged
            v = await c.objects.head(b, "k")
            nodes = v.parts[0].nodes
            assert sim.lied, "the rebuild never read the liar"
            held = [n for n in nodes if n]
            lost = []  # every named shard must be right: any len(held) - k of them down
            for down in itertools.combinations(held, len(held) - v.parts[0].k):
                sim.down = set(down)
                try:
                    if await _read(c, b, "k") != data:
                        lost.append(down)
                except StorageError:
                    lost.append(down)
                finally:
                    sim.down = set()
            assert not lost, (f"acknowledged, yet unreadable with these {len(lost)} pairs "
                              f"down (of {nodes}): {lost[:3]}")

    with mock.patch.object(objects_module, "new_stripe_id", lambda: STRIPE):
        asyncio.run(scenario())

