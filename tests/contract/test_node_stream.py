"""Contract of POST /v1/stream (many whole shards in one request) against a real node
process, through the node client's lean stream reader, and a rebuild and a rebalancing
copy that read their sources that way: the same bytes and checks as single GETs, a missing or corrupt shard answered
alone, node auth and replay protection, and a lying source still refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import msgpack
import pytest

from storage.errors import IntegrityError, ShardCorrupt, StorageError
from storage.pipeline import shard_file_bytes
from storage.rebuild import SourcesDisagree, rebuild_shards
from storage.shards.auth import body_digest, sign
from storage.shards.client import NodeClient, NodeError
from storage.shards.format import FRAME_HEAD_BYTES, HEADER_BYTES, ShardHeader
from storage.shards.ids import shard_id
from storage.shards.multiread import (
    RECORD_BYTES,
    STREAM_PATH,
    pack_record,
    parse_record,
    request_body,
)
from storage.shards.streamread import StreamReader, whole_frames
from storage.workers.rebalance import copy_shard
from tests.contract.test_node_api import (  # noqa: F401 - fixtures
    Api,
    Node,
    api,
    flip,
    http,
    make_shard,
    node,
    put_shard,
    quarantined,
    shard_path,
)
from tests.contract.test_rebuild_pooled import stored_with_a_liar, stripe
from tests.contract.test_shard_fetch import client, spec  # noqa: F401 - fixture


@pytest.fixture
async def reader(node: Node) -> AsyncIterator[StreamReader]:  # noqa: F811
    r = StreamReader(node.secret, read_timeout_s=10)
    yield r
    r.close()


async def test_stream_answers_each_shard_as_a_get_would(api: Api, node: Node,  # noqa: F811
                                                        reader: StreamReader,
                                                        client: NodeClient) -> None:  # noqa: F811
    shards = [make_shard(index=i, frames=f, block_size=4096, last=300)
              for i, f in ((0, 1), (1, 3), (2, 5))]
    for sid, _, _, body in shards:
        await put_shard(api, body, sid)
    missing = make_shard(index=3)[0]
    ids = [shards[2][0], missing, shards[0][0], shards[1][0]]
    res = await reader.read(spec(node), ids)
    assert [r["status"] for r in res] == [200, 404, 200, 200]
    for r, (sid, _, blocks, body) in zip([res[2], res[3], res[0]], shards, strict=True):
        _, _, single = await api.call("GET", f"/v1/shards/{sid}")
        assert bytes(r["data"]) == single == body and r["segments"] == len(blocks)
    sid, h, blocks, _ = shards[1]
    frames = await client.read_whole(spec(node), sid, h, len(blocks), size=20000)
    assert [(s, bytes(b)) for s, b in frames] == list(enumerate(blocks))
    with pytest.raises(NodeError):  # a missing shard fails that read alone
        await client.read_whole(spec(node), missing, h, 1, size=100)
    with pytest.raises(ShardCorrupt):  # a shard that is not the one expected is refused
        other = ShardHeader(k=4, m=2, index=1, segment_size=h.segment_size,
                            block_size=h.block_size, stripe_id=shards[0][1].stripe_id)
        await client.read_whole(spec(node), sid, other, len(blocks), size=20000)


async def test_corrupt_shard_is_answered_alone_and_quarantined(
        api: Api, node: Node, reader: StreamReader) -> None:  # noqa: F811
    good, _, _, good_body = make_shard(index=0, frames=2)
    bad, h, _, bad_body = make_shard(index=1, frames=3)
    await put_shard(api, good_body, good)
    await put_shard(api, bad_body, bad)
    flip(node, bad, h.frame_offset(2) + FRAME_HEAD_BYTES + 5)
    res = await reader.read(spec(node), [bad, good])
    assert [r["status"] for r in res] == [409, 200]
    assert bytes(res[1]["data"]) == good_body
    assert quarantined(node, bad) and not shard_path(node, bad).exists()


async def test_stream_needs_the_node_mac_a_matching_body_and_no_replay(
        api: Api, node: Node) -> None:  # noqa: F811
    sid, _, _, body = make_shard(index=0, frames=1)
    await put_shard(api, body, sid)
    ids = request_body([sid])
    wrong = sign(b"x" * 32, "POST", STREAM_PATH, "n1", body_sha256=body_digest(ids))
    status, _, _ = await api.call("POST", STREAM_PATH, signed=False, headers=wrong, data=ids)
    assert status == 401
    other = request_body([make_shard(index=1)[0]])
    swapped = sign(node.secret, "POST", STREAM_PATH, "n1", body_sha256=body_digest(other))
    status, _, _ = await api.call("POST", STREAM_PATH, signed=False, headers=swapped, data=ids)
    assert status == 401  # the body is not the one signed
    good = sign(node.secret, "POST", STREAM_PATH, "n1", body_sha256=body_digest(ids))
    status, _, answer = await api.call("POST", STREAM_PATH, signed=False, headers=good,
                                       data=ids)
    assert status == 200 and parse_record(answer[:RECORD_BYTES])[0] == 200
    assert answer[RECORD_BYTES:] == body
    status, _, _ = await api.call("POST", STREAM_PATH, signed=False, headers=good, data=ids)
    assert status == 401  # the same signed request again: a replay
    bad = msgpack.packb({"ids": ["../../etc/passwd"]})
    h = sign(node.secret, "POST", STREAM_PATH, "n1", body_sha256=body_digest(bad))
    status, _, _ = await api.call("POST", STREAM_PATH, signed=False, headers=h, data=bad)
    assert status == 400


def test_a_damaged_record_head_or_frame_is_refused() -> None:
    raw = bytearray(pack_record(200, 3, 12345))
    assert parse_record(bytes(raw)) == (200, 3, 12345)
    raw[9] ^= 1  # the length
    with pytest.raises(IntegrityError):
        parse_record(bytes(raw))
    _, h, blocks, body = make_shard(index=2, frames=3, last=10)
    assert [bytes(b) for _, b in whole_frames(body)[1]] == blocks
    for cut in (bytearray(body[:-1]), bytearray(body) + b"x"):
        with pytest.raises(IntegrityError):
            whole_frames(cut)
    damaged = bytearray(body)
    damaged[h.frame_offset(1) + FRAME_HEAD_BYTES] ^= 4
    with pytest.raises(IntegrityError):
        whole_frames(damaged)


async def test_streamed_rebuild_writes_the_writers_bytes_and_refuses_a_liar(
        api: Api, node: Node, client: NodeClient) -> None:  # noqa: F811
    n = spec(node)
    part, files = stripe(5 * 64 * 1024 + 1234)
    for i in range(1, 5):
        await put_shard(api, files[i], shard_id(part.stripe_id, i))
    length = shard_file_bytes(part.size, part.segment_size, part.k)
    with ThreadPoolExecutor(2) as cpu:
        res = await rebuild_shards(client, cpu, part, [(i, n) for i in range(1, 5)],
                                   {0: n, 5: n}, stream_bytes=length)
        assert res.written == {0: "n1", 5: "n1"} and not res.failed and not res.bad_sources
        for i in (0, 5):
            assert shard_path(node, shard_id(part.stripe_id, i)).read_bytes() == files[i]
        liar = await stored_with_a_liar(api, 3)
        with pytest.raises(SourcesDisagree):
            await rebuild_shards(client, cpu, liar, [(i, n) for i in range(5)], {5: n},
                                 stream_bytes=1 << 30)
    assert not shard_path(node, shard_id(liar.stripe_id, 5)).exists()


class Reads:
    """The real node client, counting the whole-shard stream reads."""

    def __init__(self, inner: NodeClient) -> None:
        self._inner = inner
        self.whole = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def read_whole(self, *args: object, **kw: object) -> object:
        self.whole += 1
        return await self._inner.read_whole(*args, **kw)  # type: ignore[arg-type]


async def test_rebalance_copies_a_small_shard_whole_through_the_stream(
        api: Api, node: Node, client: NodeClient) -> None:  # noqa: F811
    n = spec(node)
    part, files = stripe(3 * 64 * 1024 + 77)
    sid = shard_id(part.stripe_id, 2)
    await put_shard(api, files[2], sid)
    reads = Reads(client)
    length = shard_file_bytes(part.size, part.segment_size, part.k)
    sent = await copy_shard(reads, part, 2, n, n, whole_bytes=length)  # type: ignore[arg-type]
    assert reads.whole == 1 and sent == len(files[2]) - HEADER_BYTES
    assert shard_path(node, sid).read_bytes() == files[2]
    flip(node, sid, len(files[2]) - 9)  # a corrupt source: refused, never copied
    with pytest.raises(StorageError):
        await copy_shard(reads, part, 2, n, n, whole_bytes=length)  # type: ignore[arg-type]
    assert not shard_path(node, sid).exists() and quarantined(node, sid)
