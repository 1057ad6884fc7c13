"""`rebuild_shards` with `gather_bytes` against a real `python -m nodes` process: sources
still stream (pooled), but each rebuilt shard file is gathered and written whole, in one
PUT through the node client's lean sender instead of frame by frame; the files are the
writer's bytes, and a lying spare still stops the rebuild before anything is written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from storage.config import NodeSpec
from storage.pipeline import shard_file_bytes
from storage.rebuild import SourcesDisagree, rebuild_shards
from storage.shards.client import NodeClient
from storage.shards.ids import shard_id
from tests.contract.node_harness import (  # noqa: F401 - fixtures
    Api,
    Node,
    api,
    http,
    node,
    put_shard,
    shard_path,
)
from tests.contract.test_rebuild_pooled import SEGMENT, TakingPool, stored_with_a_liar, stripe
from tests.contract.test_shard_fetch import CountingPool, client  # noqa: F401 - fixture


class Recording:
    """The real node client, noting how each shard PUT's body came (whole bytes or not)."""

    def __init__(self, inner: NodeClient) -> None:
        self._inner = inner
        self.puts: list[tuple[str, bool, int]] = []  # (shard id, whole, bytes)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def put_shard(self, target: NodeSpec, sid: str, body: AsyncIterator[bytes] | bytes,
                        segments: int, length: int | None = None, *,
                        replace: bool = False) -> None:
        whole = isinstance(body, bytes)
        self.puts.append((sid, whole, len(body) if whole else -1))
        await self._inner.put_shard(target, sid, body, segments, length, replace=replace)


async def test_gathered_rebuild_writes_each_shard_whole_in_one_put(
        api: Api, node: Node, client: NodeClient) -> None:  # noqa: F811
    part, files = stripe(5 * SEGMENT + 1234)
    for i in range(1, 5):
        await put_shard(api, files[i], shard_id(part.stripe_id, i))
    n = NodeSpec(id="n1", zone="az1", address=f"{node.host}:{node.port}")
    rec, pool = Recording(client), TakingPool()
    length = shard_file_bytes(part.size, part.segment_size, part.k)
    with ThreadPoolExecutor(2) as cpu:
        res = await rebuild_shards(rec, cpu, part, [(i, n) for i in range(1, 5)],  # type: ignore[arg-type]
                                   {0: n, 5: n}, pool=pool, gather_bytes=length)
    assert res.written == {0: "n1", 5: "n1"} and not res.failed and not res.bad_sources
    for i in (0, 5):
        assert shard_path(node, shard_id(part.stripe_id, i)).read_bytes() == files[i]
    assert sorted(rec.puts) == [(shard_id(part.stripe_id, i), True, length) for i in (0, 5)]
    assert pool.out == 0


async def test_gathered_rebuild_refuses_a_lying_spare_and_writes_nothing(
        api: Api, node: Node, client: NodeClient) -> None:  # noqa: F811
    part = await stored_with_a_liar(api, 3)
    n = NodeSpec(id="n1", zone="az1", address=f"{node.host}:{node.port}")
    rec, pool = Recording(client), TakingPool()
    with ThreadPoolExecutor(2) as cpu, pytest.raises(SourcesDisagree):
        await rebuild_shards(rec, cpu, part, [(i, n) for i in range(5)],  # type: ignore[arg-type]
                             {5: n}, pool=pool, gather_bytes=1 << 30)
    assert pool.out == 0 and not rec.puts
    assert not shard_path(node, shard_id(part.stripe_id, 5)).exists()
