"""`read_blocks` (the GET path's and repair's segment reader) against a real `python -m nodes`
process: later frames are pulled straight from the connection (no task left per stream once
its first frame is in), a failed source is replaced mid-stream, and every pooled buffer
comes back however the read ends."""

from __future__ import annotations

import asyncio
import os

from storage.blockreads import read_blocks
from storage.config import NodeSpec
from storage.crypto.aead import TAG_BYTES
from storage.erasure import ErasureCodec
from storage.pipeline import segment_count, segment_length
from storage.rebuild import part_headers
from storage.records import PartLayout
from storage.shards.client import NodeClient
from storage.shards.format import FRAME_HEAD_BYTES, pack_frame
from storage.shards.ids import new_stripe_id, shard_id
from tests.contract.node_harness import (  # noqa: F401 - fixtures
    Api,
    Node,
    api,
    flip,
    http,
    node,
    put_shard,
)
from tests.contract.test_shard_fetch import CountingPool, client  # noqa: F401 - fixture

SEGMENT = 64 * 1024
SEGMENTS = 6


def stripe() -> tuple[PartLayout, list[bytes], list[list[bytes]]]:
    """A 4+2 part of six segments: its layout, shard files and blocks (by shard, segment)."""
    size = SEGMENTS * SEGMENT
    part = PartLayout(number=1, size=size, etag="", stripe_id=new_stripe_id(), k=4, m=2,
                      segment_size=SEGMENT, nodes=["n1"] * 6)
    headers, codec = part_headers(part), ErasureCodec(4, 2)
    files = [bytearray(h.pack()) for h in headers]
    blocks: list[list[bytes]] = [[] for _ in range(6)]
    for seg in range(segment_count(size, SEGMENT)):
        sealed = os.urandom(segment_length(size, SEGMENT, seg) + TAG_BYTES)
        for i, block in enumerate(codec.encode(sealed)):
            files[i] += pack_frame(headers[i], seg, block)
            blocks[i].append(bytes(block))
    return part, [bytes(f) for f in files], blocks


async def stored(api: Api, shards: range) -> tuple[PartLayout, list[list[bytes]]]:  # noqa: F811
    part, files, blocks = stripe()
    for i in shards:
        await put_shard(api, files[i], shard_id(part.stripe_id, i))
    return part, blocks


def sources(node: Node, indexes: list[int]) -> list[tuple[int, NodeSpec]]:  # noqa: F811
    n = NodeSpec(id="n1", zone="az1", address=f"{node.host}:{node.port}")
    return [(i, n) for i in indexes]


async def test_frames_are_pulled_without_a_task_per_stream(api: Api, node: Node,  # noqa: F811
                                                           client: NodeClient,  # noqa: F811
                                                           ) -> None:
    part, blocks = await stored(api, range(6))
    pool = CountingPool()
    before = asyncio.all_tasks()
    got: dict[int, dict[int, bytes]] = {}
    async for seg, bs in read_blocks(client, part_headers(part), sources(node, [0, 1, 2, 3]),
                                     4, 0, SEGMENTS - 1, pool=pool):
        got[seg] = {i: bytes(b) for i, b in bs.items()}
        if seg >= 1:  # the streams are open, mid-read, and no task works for them
            assert not [t for t in asyncio.all_tasks() - before if not t.done()]
    assert got == {s: {i: blocks[i][s] for i in range(4)} for s in range(SEGMENTS)}
    assert pool.out == 0
    idle = client._fetch._pool.idle(sources(node, [0])[0][1])  # type: ignore[attr-defined]
    assert len(idle) == 4 and not any(c.closed for c in idle)  # kept alive for the next read


async def test_a_source_failing_mid_stream_is_replaced(api: Api, node: Node,  # noqa: F811
                                                       client: NodeClient,  # noqa: F811
                                                       ) -> None:
    part, blocks = await stored(api, range(6))
    headers = part_headers(part)
    flip(node, shard_id(part.stripe_id, 1), headers[1].frame_offset(3) + FRAME_HEAD_BYTES + 7)
    pool, failed = CountingPool(), []
    got: dict[int, dict[int, bytes]] = {}
    async for seg, bs in read_blocks(client, headers, sources(node, [0, 1, 2, 3, 4, 5]), 4, 0,
                                     SEGMENTS - 1, lambda i, n, e: failed.append(i), pool=pool):
        got[seg] = {i: bytes(b) for i, b in bs.items()}
    assert failed == [1]
    assert got[2] == {i: blocks[i][2] for i in range(4)}
    for seg in range(3, SEGMENTS):  # shard 4 took over from the segment shard 1 stopped at
        assert got[seg] == {i: blocks[i][seg] for i in (0, 2, 3, 4)}
    assert pool.out == 0


async def test_a_reader_stopping_early_gives_every_buffer_back(api: Api,  # noqa: F811
                                                               node: Node,  # noqa: F811
                                                               client: NodeClient,  # noqa: F811
                                                               ) -> None:
    part, _ = await stored(api, range(4))
    pool = CountingPool()
    reader = read_blocks(client, part_headers(part), sources(node, [0, 1, 2, 3]), 4, 0,
                         SEGMENTS - 1, pool=pool)
    seg, _ = await anext(reader)
    assert seg == 0
    await reader.aclose()  # the others prefetched frames nobody will read
    assert pool.out == 0 and not client.stream_slots.open  # buffers and stream slots back
    before = asyncio.all_tasks()
    reader = read_blocks(client, part_headers(part), sources(node, [0, 1, 2, 3]), 4, 0,
                         SEGMENTS - 1, pool=pool)
    await reader.aclose()  # closed before it started: nothing was opened
    assert pool.out == 0 and not [t for t in asyncio.all_tasks() - before if not t.done()]


async def test_a_node_that_stalls_after_the_last_frame_does_not_hold_the_read(
        client: NodeClient) -> None:  # noqa: F811
    """A response that promises more bytes than the frames asked for and then goes silent:
    the reader has every verified frame at once (the connection is dropped, not waited on)."""
    from tests.contract.node_harness import make_shard

    _, h, blocks, body = make_shard(index=0, frames=3, block_size=4096, last=999)
    silent = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(body) + 100)
                     + body)
        await writer.drain()
        await silent.wait()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    n = NodeSpec(id="n1", zone="az1", address=f"127.0.0.1:{port}")
    pool, got = CountingPool(), []
    try:
        async with asyncio.timeout(5):  # the client's read timeout is 10 s
            async for seg, bs in read_blocks(client, [h], [(0, n)], 1, 0, 2, pool=pool):
                got.append((seg, bytes(bs[0])))
    finally:
        silent.set()
        server.close()
    assert got == [(i, blocks[i]) for i in range(3)] and pool.out == 0


async def test_reads_past_the_streams_per_node_bound_wait_their_turn(
        api: Api, node: Node, client: NodeClient) -> None:  # noqa: F811
    """With room for one read's four streams to the node, a second read waits (holding no
    stream) until the first ends, then reads everything; every slot comes back."""
    from storage.shards.streamslots import StreamSlots

    part, blocks = await stored(api, range(4))
    slots = client.stream_slots = StreamSlots(limit=4)
    pool = CountingPool()

    def read() -> object:
        return read_blocks(client, part_headers(part), sources(node, [0, 1, 2, 3]), 4, 0,
                           SEGMENTS - 1, pool=pool)

    async def whole() -> dict[int, dict[int, bytes]]:
        return {seg: {i: bytes(b) for i, b in bs.items()} async for seg, bs in read()}

    first = read()
    seg, _ = await anext(first)  # type: ignore[call-overload]
    second = asyncio.create_task(whole())
    async with asyncio.timeout(10):
        while not slots.waiting:
            await asyncio.sleep(0)
    assert slots.open == {sources(node, [0])[0][1].address: 4} and not second.done()
    async for _ in first:  # type: ignore[attr-defined]
        pass
    got = await asyncio.wait_for(second, 10)
    assert got == {s: {i: blocks[i][s] for i in range(4)} for s in range(SEGMENTS)}
    assert not slots.open and slots.overflows == 0 and pool.out == 0


async def test_a_cancellation_landing_in_a_close_leaks_no_slot_and_closes_every_stream(
        api: Api, node: Node, client: NodeClient, monkeypatch) -> None:  # noqa: F811
    """A reader closed early whose first stream's close is cut short by a cancellation:
    every slot still comes back (the bound would otherwise shrink for the process's life)
    and the other streams are still closed."""
    from storage import blockreads
    from storage.shards.streamslots import StreamSlots

    part, _ = await stored(api, range(4))
    slots = client.stream_slots = StreamSlots(limit=4)
    real = blockreads._ShardStream.close
    closed: list[int] = []

    async def close(self: blockreads._ShardStream) -> None:
        await real(self)
        closed.append(self.index)
        if len(closed) == 1:
            raise asyncio.CancelledError  # as if the reader's task were cancelled here

    monkeypatch.setattr(blockreads._ShardStream, "close", close)
    reader = read_blocks(client, part_headers(part), sources(node, [0, 1, 2, 3]), 4, 0,
                         SEGMENTS - 1)
    await anext(reader)
    try:
        await reader.aclose()
    except asyncio.CancelledError:
        pass
    assert sorted(closed) == [0, 1, 2, 3] and not slots.open
    await asyncio.wait_for(slots.admit(sources(node, [0, 1, 2, 3])[i][1] for i in range(4)),
                           30)  # freed: at once (a hang bound, not a loaded box's 1 s)
