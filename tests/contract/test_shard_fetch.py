"""The gateway's lean shard reader (`NodeClient.read_frames_into`, `storage.shards.fetch`)
against a real `python -m nodes` process: same frames as the general client, connections
kept alive and reused, every pooled buffer given back, and corruption, a missing shard and
a dropped connection reported as the read path expects. Corruption is found by the
gateway (the node sends frames unchecked to it); the node is then asked once, in the
background, to check the bad frame: rot on its disk is quarantined, damage on the way is
not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from storage.buffers import BufferPool
from storage.config import NodeSpec
from storage.errors import ShardCorrupt
from storage.shards.assembler import FrameAssembler
from storage.shards.client import NodeClient, NodeError
from storage.shards.fetch import ShardFetcher
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
    quarantined,
)
from tests.fetch_helpers import CountingPool, frame_failures

HANG_S = 300  # bounds a hang; a loaded machine takes seconds, never this long


@pytest.fixture
async def client(node: Node) -> AsyncIterator[NodeClient]:  # noqa: F811
    async with aiohttp.ClientSession() as session:
        c = NodeClient(session, node.secret, read_timeout_s=HANG_S)
        c._fetch.checks.timeout_s = HANG_S  # node checks end on their own (a loaded machine)
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


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, bool]]:
    """(first, count, node_checks) of every shard GET the fetcher sends."""
    sent: list[tuple[int, int, bool]] = []
    real = ShardFetcher.frames

    def frames(self: ShardFetcher, node: NodeSpec, sid: str, expect: ShardHeader,  # noqa: F811
               first: int, count: int, pool: BufferPool, node_checks: bool = False,
               ) -> AsyncIterator[tuple[int, memoryview, bytearray]]:
        sent.append((first, count, node_checks))
        return real(self, node, sid, expect, first, count, pool, node_checks)

    monkeypatch.setattr(ShardFetcher, "frames", frames)
    return sent


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


async def test_corruption_missing_and_foreign_shards(
        api: Api, node: Node, client: NodeClient,  # noqa: F811
        requests: list[tuple[int, int, bool]]) -> None:
    n, pool = spec(node), CountingPool()
    sid, h, blocks, body = make_shard(index=1, frames=40, block_size=64 * 1024, last=None)
    await put_shard(api, body, sid)
    other = ShardHeader(k=4, m=2, index=1, segment_size=h.segment_size,
                        block_size=h.block_size, stripe_id=bytes(16))
    with pytest.raises(ShardCorrupt, match="another shard"):
        await fetch(client, n, sid, other, 0, 40, pool)
    await client._fetch.checks.wait()
    assert requests == [(0, 40, False)]  # a foreign header: the node checks that at open
    requests.clear()
    flip(node, sid, h.frame_offset(30) + FRAME_HEAD_BYTES + 5)
    got: list[int] = []
    # the node sends frame 30 unchecked (the reader checks); the gateway's check fails
    with pytest.raises(ShardCorrupt, match="on n1: segment 30 of shard 1: checksum mismatch"):
        async for seg, _, buf in client.read_frames_into(n, sid, h, 0, 40, pool):
            got.append(seg)
            pool.give(buf)
    assert got == list(range(30))
    await client._fetch.checks.wait()  # the node checked frame 30 itself: quarantined
    assert requests == [(0, 40, False), (30, 1, True)]  # exactly one re-check
    assert quarantined(node, sid)
    with pytest.raises(NodeError) as missing:  # quarantined by the node: gone
        await fetch(client, n, sid, h, 0, 1, pool)
    assert missing.value.status == 404
    sid2, h2, _, body2 = make_shard(index=1, frames=3, block_size=4096)
    await put_shard(api, body2, sid2)
    flip(node, sid2, h2.frame_offset(0) + FRAME_HEAD_BYTES + 1)
    requests.clear()
    with pytest.raises(ShardCorrupt, match="segment 0"):
        await fetch(client, n, sid2, h2, 0, 3, pool)
    await client._fetch.checks.wait()
    assert requests == [(0, 3, False), (0, 1, True)] and quarantined(node, sid2)
    assert pool.out == 0


async def test_damage_on_the_way_is_not_quarantined(
        api: Api, node: Node, client: NodeClient,  # noqa: F811
        requests: list[tuple[int, int, bool]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Frame 2 goes bad between the node's disk and the gateway's check: the read fails
    with ShardCorrupt (the stripe reader routes around it and reports it), the node checks
    frame 2 once, finds it fine and keeps the shard."""
    n, pool = spec(node), CountingPool()
    sid, h, blocks, body = make_shard(index=2, frames=6, block_size=64 * 1024, last=None)
    await put_shard(api, body, sid)
    real = FrameAssembler._finish_block
    damaged: list[int] = []

    def on_the_way(self: FrameAssembler) -> None:
        if self.segment == 2 and not damaged:  # the first time only
            damaged.append(2)
            self._view[7] ^= 0x10
        real(self)

    monkeypatch.setattr(FrameAssembler, "_finish_block", on_the_way)
    with pytest.raises(ShardCorrupt, match="on n1: segment 2 of shard 2: checksum mismatch"):
        await fetch(client, n, sid, h, 0, 6, pool)
    await client._fetch.checks.wait()
    assert requests == [(0, 6, False), (2, 1, True)]  # one re-check, and it passed
    assert not quarantined(node, sid)
    assert await fetch(client, n, sid, h, 0, 6, pool) == list(enumerate(blocks))
    assert pool.out == 0


async def test_rot_the_reader_stopped_before_is_still_quarantined(
        api: Api, node: Node, client: NodeClient,  # noqa: F811
        requests: list[tuple[int, int, bool]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Frame 3 is rotten on the node's disk; it arrives (and fails the gateway's check)
    while the reader holds frame 1, and the reader stops there (an S3 client hung up, a
    spare stream closed): the node is still asked to check it, and quarantines the shard."""
    n, pool = spec(node), CountingPool()
    sid, h, _, body = make_shard(index=3, frames=12, block_size=16 * 1024, last=None)
    await put_shard(api, body, sid)
    flip(node, sid, h.frame_offset(3) + FRAME_HEAD_BYTES + 3)
    failed = frame_failures(monkeypatch)
    frames = client.read_frames_into(n, sid, h, 0, 12, pool)
    async with asyncio.timeout(HANG_S):
        for want in (0, 1):
            seg, _, buf = await anext(frames)
            assert seg == want
            pool.give(buf)
        await failed.wait()  # frame 3 arrived and failed the gateway's check, unpulled
    await frames.aclose()
    await client._fetch.checks.wait()
    assert requests == [(0, 12, False), (3, 1, True)]
    assert quarantined(node, sid)
    assert pool.out == 0
