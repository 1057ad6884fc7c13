"""Shard stats go through the nodes' batch endpoint and answer what the single stat does.

The repair sweep stats every shard of every stripe; `NodeClient.stat_shard` gathers the
stats bound for one node into `POST /v1/batch` requests. On a real cluster: each present
shard's batched stat equals `GET /v1/shards/<id>/stat`, many concurrent stats all answer,
and a shard the node does not hold is None.
"""

from __future__ import annotations

import asyncio
import random

from storage.cluster import Cluster
from storage.config import load_config
from storage.shards.ids import shard_id
from tests.integration.cluster import LocalCluster


def test_batched_stats_match_single_stats(cluster: LocalCluster) -> None:
    s3 = cluster.client()
    s3.create_bucket(Bucket="batchstat")
    rnd = random.Random(5)
    for i in range(6):
        s3.put_object(Bucket="batchstat", Key=f"o{i}", Body=rnd.randbytes(300_000))
    held = [(node, p.name) for node, files in cluster.shard_files().items() for p in files]
    assert len(held) >= 36

    async def check() -> None:
        c = await Cluster.open(load_config(cluster.data / "tessera.toml"), probe=False)
        try:
            by_id = {n.id: n for n in c.health.nodes}
            single_json = c.nodes._json
            singles: list[str] = []

            async def counted(method: str, node: object, path: str) -> object:
                singles.append(path)
                return await single_json(method, node, path)

            c.nodes._json = counted  # type: ignore[method-assign]
            batched = await asyncio.gather(*(c.nodes.stat_shard(by_id[n], sid)
                                             for n, sid in held))
            assert singles == []  # every stat was answered by a batch
            single = await asyncio.gather(*(single_json("GET", by_id[n],
                                                        f"/v1/shards/{sid}/stat")
                                            for n, sid in held))
            # the same answers but each file's age, read on the node's clock at each call
            assert [_timeless(b) for b in batched] == [_timeless(s) for s in single]
            assert all(b is not None and b["age_s"] >= 0 for b in batched)
            assert all(b is not None and b["id"] == sid for b, (_, sid) in
                       zip(batched, held, strict=True))
            node = by_id[held[0][0]]
            assert await c.nodes.stat_shard(node, shard_id(bytes(16), 3)) is None
        finally:
            await c.close()

    asyncio.run(check())


def _timeless(stat: dict | None) -> dict | None:  # type: ignore[type-arg]
    """A shard stat without its age (`age_s`: seconds since the file was written, on the
    node's clock when asked, so two calls a second apart differ)."""
    return None if stat is None else {k: v for k, v in stat.items() if k != "age_s"}
