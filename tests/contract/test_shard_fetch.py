"""The gateway's lean shard reader (`NodeClient.read_frames_into`, `storage.shards.fetch`)
against a real `python -m nodes` process: same frames as the general client, connections
kept alive and reused, every pooled buffer given back, and corruption, a missing shard and
a dropped connection reported as the read path expects."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from storage.buffers import BufferPool
from storage.config import NodeSpec
from storage.errors import ShardCorrupt, StorageError
from storage.shards.client import NodeClient, NodeError
from storage.shards.format import FRAME_HEAD_BYTES, ShardHeader
from tests.contract.node_harness import (  # noqa: F401 - fixtures
    Api,
    Node,
    api,
    flip,
    http,
    make_shard,
    node,
    put_shard,
)


class CountingPool(BufferPool):
    def __init__(self) -> None:
        super().__init__(1 << 30)
        self.out = 0

    def take(self, size: int) -> bytearray:
        self.out += 1
        return super().take(size)

    def give(self, buf: bytearray) -> None:
        self.out -= 1
        super().give(buf)


@pytest.fixture
async def client(node: Node) -> AsyncIterator[NodeClient]:  # noqa: F811
    async with aiohttp.ClientSession() as session:
        c = NodeClient(session, node.secret, read_timeout_s=10)
        yield c
        c.close()


def spec(node: Node) -> NodeSpec:  # noqa: F811
    return NodeSpec(id="n1", zone="az1", address=f"{node.host}:{node.port}")


async def fetch(c: NodeClient, n: NodeSpec, sid: str, h: ShardHeader, first: int, count: int,
                pool: CountingPool) -> list[tuple[int, bytes]]:
    out = []
    async for seg, view, buf in c.read_frames_into(n, sid, h, first, count, pool):
        out.append((seg, bytes(view)))
        pool.give(buf)
    return out


async def test_frames_match_and_connections_are_reused(api: Api, node: Node,  # noqa: F811
                                                       client: NodeClient) -> None:
    sid, h, blocks, body = make_shard(index=2, frames=9, block_size=256 * 1024, last=999)
    await put_shard(api, body, sid)
    n, pool = spec(node), CountingPool()
    for first, count in [(0, 9), (3, 4), (8, 1), (9, 0)]:
        got = await fetch(client, n, sid, h, first, count, pool)
        assert got == [(i, blocks[i]) for i in range(first, first + count)]
        assert got == [f async for f in client.read_frames(n, sid, h, first, count)]
    assert pool.out == 0
    idle = client._fetch._pool.idle(n)
    assert len(idle) == 1 and not idle[0].closed  # one connection served every read


async def test_corruption_missing_and_foreign_shards(api: Api, node: Node,  # noqa: F811
                                                     client: NodeClient) -> None:
    n, pool = spec(node), CountingPool()
    sid, h, blocks, body = make_shard(index=1, frames=40, block_size=64 * 1024, last=None)
    await put_shard(api, body, sid)
    other = ShardHeader(k=4, m=2, index=1, segment_size=h.segment_size,
                        block_size=h.block_size, stripe_id=bytes(16))
    with pytest.raises(ShardCorrupt, match="another shard"):
        await fetch(client, n, sid, other, 0, 40, pool)
    flip(node, sid, h.frame_offset(30) + FRAME_HEAD_BYTES + 5)
    got: list[int] = []
    with pytest.raises(StorageError):  # the node cuts the body short at frame 30
        async for seg, _, buf in client.read_frames_into(n, sid, h, 0, 40, pool):
            got.append(seg)
            pool.give(buf)
    assert got == list(range(len(got))) and len(got) <= 30
    with pytest.raises(NodeError) as missing:  # quarantined by the node: gone
        await fetch(client, n, sid, h, 0, 1, pool)
    assert missing.value.status == 404
    sid2, h2, _, body2 = make_shard(index=1, frames=3, block_size=4096)
    await put_shard(api, body2, sid2)
    flip(node, sid2, h2.frame_offset(0) + FRAME_HEAD_BYTES + 1)
    with pytest.raises(ShardCorrupt, match="reports corruption"):
        await fetch(client, n, sid2, h2, 0, 3, pool)
    assert pool.out == 0
