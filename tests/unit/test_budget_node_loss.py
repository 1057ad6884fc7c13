"""A node that fails in the middle of a shard's body (not at its start or end, as SimNodes'
`down` does) while a long write goes on: the write completes at quorum, its frames sent to
the failed node's sender are let go (else its frame sets stay counted and, after the
per-write cap of them, the write waits for ever), and the budget ends at 0."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from storage.config import NodeSpec
from storage.shards.client import NodeError
from storage.testing.simnodes import SimNodes
from tests.inproc import served_s3, sim_config, wired_cluster

MiB = 1024 * 1024
SEG = 64 * 1024


class _FailsMidBody(SimNodes):
    """The first node a streamed shard goes to fails after a few frames of it."""

    victim: str | None = None

    async def put_shard(self, node: NodeSpec, sid: str, body: Any, segments: int,
                        length: int | None = None, *, replace: bool = False) -> None:
        if self.victim is None and not isinstance(body, (bytes, bytearray)) \
                and hasattr(body, "__aiter__"):
            self.victim = node.id

            async def cut(src: AsyncIterator[Any]) -> AsyncIterator[Any]:
                n = 0
                async for chunk in src:
                    n += 1
                    if n > 3:
                        raise NodeError(node.id, "connection reset (simulated, mid-body)")
                    yield chunk
            body = cut(body)
        await super().put_shard(node, sid, body, segments, length, replace=replace)


async def test_a_node_failing_mid_body_lets_its_frames_go(tmp_path: Path) -> None:
    sim = sim_config(tmp_path, 1024)
    cfg = replace(sim, segment_size=SEG, large_segment_size=4 * SEG,
                  gateway=replace(sim.gateway, upload_budget_bytes=16 * MiB))
    nodes = _FailsMidBody(list(cfg.nodes))
    async with wired_cluster(tmp_path, cfg, nodes) as cluster:
        cred = await cluster.tenants.create_key("t")
        await cluster.buckets.create("t", "midloss")
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            body = bytes(range(256)) * (3 * MiB // 256)  # 48 segments
            async with asyncio.timeout(30):
                etag = await asyncio.to_thread(lambda: s3.put_object(
                    Bucket="midloss", Key="o", Body=body)["ETag"].strip('"'))
            assert nodes.victim is not None
            assert etag == hashlib.md5(body).hexdigest()
            got = await asyncio.to_thread(
                lambda: s3.get_object(Bucket="midloss", Key="o")["Body"].read())
            assert got == body
            assert cluster.stripes.uploads.in_use == 0
