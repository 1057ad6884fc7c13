"""A lying shard while another node of the stripe hangs (accepts, never answers: a stopped
process, a dead disk under a live socket). The read's first k shards leave the known-down node
out; when a tag then fails, recovery reads the segment's block from the other shards. It read
every other shard at once, the hung one included, and waited for it: on real processes each
such GET took the node read timeout (15 s) for as long as the node hung, although the usable
shards alone authenticate. Now the usable ones are tried first, the down ones only if they
are needed. Real object service and codec over in-memory nodes; the hang is unbounded, so
only the old behaviour can time out.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.config import NodeSpec
from storage.shards.format import ShardHeader
from storage.shards.ids import shard_id
from storage.testing.lies import lie
from storage.testing.simnodes import SimNodes
from tests.inproc import served_s3, sim_config, wired_cluster

BUCKET = "hung"


class HangingNodes(SimNodes):
    """SimNodes whose nodes in `hung` never answer a read."""

    def __init__(self, nodes: list[NodeSpec]) -> None:
        super().__init__(nodes)
        self.hung: set[str] = set()

    async def read_frames(self, node: NodeSpec, sid: str, expect: ShardHeader, first: int,
                          count: int) -> AsyncIterator[tuple[int, bytes]]:
        if node.id in self.hung:
            await asyncio.Event().wait()
        async for frame in super().read_frames(node, sid, expect, first, count):
            yield frame


@pytest.mark.parametrize("size", [5000, 3 * 1024 * 1024 + 7], ids=["small", "streamed"])
async def test_a_lie_is_recovered_without_waiting_for_a_hung_node(tmp_path: Path,
                                                                  size: int) -> None:
    cfg = sim_config(tmp_path, 1024)
    nodes = HangingNodes(list(cfg.nodes))
    body = hashlib.shake_256(b"hung").digest(size)
    async with wired_cluster(tmp_path, cfg, nodes) as cluster:
        cred = await cluster.tenants.create_key("t")
        bucket = await cluster.buckets.create("t", BUCKET)
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key="o", Body=body)
        v = await cluster.objects.head(bucket, "o")
        part = v.parts[0]
        placed = [(i, n) for i, n in enumerate(part.nodes) if n is not None]
        (liar_index, liar), (_, victim) = placed[0], placed[-1]  # a data shard lies
        sid = shard_id(part.stripe_id, liar_index)
        nodes.files[liar][sid] = bytearray(lie(bytes(nodes.files[liar][sid]), "x", None))
        cluster.health.report_failure(victim, "ClientConnectorError: Connect call failed")
        assert not cluster.health.is_usable(victim)
        nodes.hung.add(victim)

        async def whole() -> bytes:
            return b"".join([bytes(c) async for c in cluster.objects.read(v)])

        assert await asyncio.wait_for(whole(), 60) == body
