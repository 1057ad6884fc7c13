"""review22e: packs22 item 5 ("a read racing a punch gets the shard or 404, never a
checksum failure") covers the single GET (`shardget.open_get`) only. The batched small-shard
GET (`nodes.batch._get_all`, what `NodeClient.read_small` uses) meeting the same race still
answers 409 `corrupt` for a shard that was replaced (alive elsewhere in the pack) or
deleted, though nothing is quarantined: the gateway takes it as a corrupt shard. It now answers
as the single GET: the shard where it is now (200, the new bytes) for a replace, 404 for a
delete (mend22e, `DiskShardStore.unless_died`)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from nodes import packformat as pf
from nodes.batch import _get_all, _stat_ops
from nodes.handlers import NODE, STATS, RequestStats
from nodes.shardfile import ShardLocation
from tests.contract.node_harness import make_shard
from tests.unit.test_packed_node import (  # noqa: F401 - `node`: the fixture
    BLOCK,
    Node,
    node,
    put,
    same_header_other_bytes,
)


@pytest.mark.parametrize("change", ["replace", "delete"])
async def test_a_batched_read_racing_a_punch_is_not_a_corrupt_shard(
        node: Node, monkeypatch: pytest.MonkeyPatch, change: str) -> None:  # noqa: F811
    sid, h, _, body = make_shard(frames=4, block_size=BLOCK, last=None)
    assert (await put(node, body, sid))[0] == 201
    packs = node.store.packs
    assert packs is not None
    old = node.store.locate(sid)
    new = same_header_other_bytes(h, 4)
    if change == "replace":
        await packs.put(sid, [new], replace=True)
    else:
        assert (await node.call("DELETE", f"/v1/shards/{sid}"))[0] in (200, 204)
    assert await packs.punch(min_dead=0) > 0
    real, calls = node.store.locate, []

    def locate(s: str) -> ShardLocation:
        calls.append(s)
        return old if len(calls) == 1 else real(s)
    monkeypatch.setattr(node.store, "locate", locate)
    st = node.runner.app[NODE]
    request = make_mocked_request("POST", "/v1/batch", app=node.runner.app)
    request[STATS] = RequestStats(request_id="t")
    results: list[dict[str, Any] | None] = [None]
    await _get_all(st, request, [(0, {"id": sid, "first": 0, "count": 4})], results)
    got = results[0]
    assert got is not None
    print(change, "batched get answers", got.get("status"), got.get("message", ""),
          "quarantined:", len(await node.store.quarantined()))
    assert await node.store.quarantined() == []
    assert got["status"] == (200 if change == "replace" else 404), got
    if change == "replace":
        assert got["data"] == new


async def test_a_stat_racing_a_punch_of_its_header_is_not_a_corrupt_shard(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A stat reads the header only, so it meets the race when the dead record's body
    begins on a file-system block (its header's block is punched): the stat then answers
    as the single GET, 404 for a deleted shard (mend22e, `DiskShardStore.unless_died`)."""
    packs = node.store.packs
    assert packs is not None
    sid, _, _, body = make_shard(frames=4, block_size=BLOCK, last=None)
    _, _, _, probe = make_shard(frames=1, block_size=BLOCK, last=1)
    fixed = len(probe) - 1  # a one-frame shard's bytes besides its frame's data
    at = packs.sizes.get(packs._active, 0)
    blk = os.stat(packs.pack_dir).st_blksize
    # a filler record first, sized so the shard's body begins on a block
    last = -(at + pf.OVERHEAD + fixed + pf.HEAD_BYTES) % blk or blk
    fill, _, _, filler = make_shard(frames=1, block_size=BLOCK, last=last)
    assert (await put(node, filler, fill))[0] == 201
    assert (await put(node, body, sid))[0] == 201
    old = node.store.locate(sid)
    assert old.base % blk == 0, (old.base, blk)
    assert (await node.call("DELETE", f"/v1/shards/{sid}"))[0] in (200, 204)
    assert await packs.punch(min_dead=0) > 0
    real, calls = node.store.locate, []

    def locate(s: str) -> ShardLocation:
        calls.append(s)
        return old if len(calls) == 1 else real(s)
    monkeypatch.setattr(node.store, "locate", locate)
    st = node.runner.app[NODE]
    request = make_mocked_request("POST", "/v1/batch", app=node.runner.app)
    request[STATS] = RequestStats(request_id="t")
    results: list[dict[str, Any] | None] = [None]
    await _stat_ops(st, request, [(0, sid)], results)
    got = results[0]
    assert got is not None
    print("batched stat answers", got.get("status"), got.get("message", ""))
    assert await node.store.quarantined() == []
    assert got["status"] == 404, got
