"""`rebuild_shards` against a real `python -m nodes` process with its source frames received
into a buffer pool (the GET path's lean reader): the rebuilt shard file is byte-identical to
the one the writer made, every pooled buffer comes back, and a lying spare source still
stops the rebuild (`SourcesDisagree`) without leaking a buffer."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from storage.config import NodeSpec
from storage.crypto.aead import TAG_BYTES
from storage.erasure import ErasureCodec
from storage.pipeline import segment_count, segment_length
from storage.rebuild import SourcesDisagree, part_headers, rebuild_shards
from storage.records import PartLayout
from storage.shards.client import NodeClient
from storage.shards.format import pack_frame
from storage.shards.ids import new_stripe_id, shard_id
from tests.contract.node_harness import (  # noqa: F401 - fixtures
    Api,
    Node,
    api,
    http,
    node,
    put_shard,
    shard_path,
)
from tests.contract.test_shard_fetch import CountingPool, client  # noqa: F401 - fixture

SEGMENT = 64 * 1024


class TakingPool(CountingPool):
    """Counts buffers out (`out`) and taken in all (`taken`)."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = 0

    def take(self, size: int) -> bytearray:
        self.taken += 1
        return super().take(size)


def stripe(size: int) -> tuple[PartLayout, list[bytes]]:
    """A 4+2 part of `size` plaintext bytes (random sealed segments) and its shard files."""
    sid = new_stripe_id()
    part = PartLayout(number=1, size=size, etag="", stripe_id=sid, k=4, m=2,
                      segment_size=SEGMENT, nodes=["n1"] * 6)
    headers, codec = part_headers(part), ErasureCodec(4, 2)
    files = [bytearray(h.pack()) for h in headers]
    for seg in range(segment_count(size, SEGMENT)):
        sealed = os.urandom(segment_length(size, SEGMENT, seg) + TAG_BYTES)
        for i, block in enumerate(codec.encode(sealed)):
            files[i] += pack_frame(headers[i], seg, block)
    return part, [bytes(f) for f in files]


async def test_pooled_rebuild_writes_the_writers_bytes(api: Api, node: Node,  # noqa: F811
                                                       client: NodeClient) -> None:  # noqa: F811
    part, files = stripe(5 * SEGMENT + 1234)
    for i in range(5):
        await put_shard(api, files[i], shard_id(part.stripe_id, i))
    n = NodeSpec(id="n1", zone="az1", address=f"{node.host}:{node.port}")
    pool = TakingPool()
    with ThreadPoolExecutor(2) as cpu:
        res = await rebuild_shards(client, cpu, part, [(i, n) for i in (1, 2, 3, 4, 0)],
                                   {5: n}, pool=pool)
    assert res.written == {5: "n1"} and not res.failed and not res.bad_sources
    assert shard_path(node, shard_id(part.stripe_id, 5)).read_bytes() == files[5]
    assert pool.taken >= 5 * 6 and pool.out == 0  # k+1 sources x 6 segments, all given back


async def stored_with_a_liar(api: Api, segments: int) -> PartLayout:  # noqa: F811
    """A 4+2 part of `segments` segments stored on the node: shards 0-3 honest, shard 4 a
    liar (valid header and frame checksums, wrong bytes), 5 absent."""
    part, files = stripe(segments * SEGMENT)
    headers = part_headers(part)
    liar = bytearray(files[4][:len(headers[4].pack())])  # valid crc32c, wrong bytes
    for seg in range(segments):
        liar += pack_frame(headers[4], seg, os.urandom(headers[4].block_size))
    for i in range(4):
        await put_shard(api, files[i], shard_id(part.stripe_id, i))
    await put_shard(api, bytes(liar), shard_id(part.stripe_id, 4))
    return part


async def test_pooled_rebuild_refuses_a_lying_spare(api: Api, node: Node,  # noqa: F811
                                                    client: NodeClient) -> None:  # noqa: F811
    part = await stored_with_a_liar(api, 3)
    n = NodeSpec(id="n1", zone="az1", address=f"{node.host}:{node.port}")
    pool = TakingPool()
    with ThreadPoolExecutor(2) as cpu, pytest.raises(SourcesDisagree):
        await rebuild_shards(client, cpu, part, [(i, n) for i in range(5)], {5: n}, pool=pool)
    assert pool.taken and pool.out == 0
    assert not shard_path(node, shard_id(part.stripe_id, 5)).exists()
