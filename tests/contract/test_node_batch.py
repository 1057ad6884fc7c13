"""Contract of POST /v1/batch (small whole-shard puts and gets), against a real node process."""

from __future__ import annotations

import msgpack

from storage.shards.auth import body_digest, sign
from storage.shards.format import FRAME_HEAD_BYTES, HEADER_BYTES, pack_frame
from tests.contract import test_node_api as base
from tests.contract.node_harness import (
    Api,
    Node,
    flip,
    make_shard,
    put_shard,
    quarantined,
    shard_path,
)

node, http, api = base.node, base.http, base.api  # the node API tests' fixtures


async def batch(api: Api, ops: list[dict[str, object]], *, body: bytes | None = None,
                signed_body: bytes | None = None) -> tuple[int, list[dict[str, object]]]:
    """Send ops; `body` replaces what is sent, `signed_body` what the signature covers."""
    raw = msgpack.packb({"ops": ops}, use_bin_type=True)
    sent = raw if body is None else body
    covered = raw if signed_body is None else signed_body
    headers = sign(api.node.secret, "POST", "/v1/batch", "n1", body_sha256=body_digest(covered))
    status, _, answer = await api.call("POST", "/v1/batch", signed=False, headers=headers,
                                       data=sent)
    if status != 200:
        return status, []
    return status, msgpack.unpackb(answer, raw=False)["results"]


async def test_batched_puts_and_gets_match_single_requests(api: Api, node: Node) -> None:
    shards = [make_shard(index=i, frames=f, block_size=1024, last=300)
              for i, f in ((0, 1), (1, 1), (2, 3))]
    status, res = await batch(api, [{"op": "put", "id": sid, "segments": len(blocks),
                                     "data": body} for sid, _, blocks, body in shards])
    assert status == 200 and [r["status"] for r in res] == [201, 201, 201]
    for (sid, _, blocks, body), r in zip(shards, res, strict=True):
        assert r["bytes"] == len(body) and r["segments"] == len(blocks)
        assert shard_path(node, sid).read_bytes() == body  # the file a streamed PUT makes
    sid, h, blocks, body = shards[2]
    status, res = await batch(api, [{"op": "get", "id": sid, "first": 0, "count": None},
                                    {"op": "get", "id": sid, "first": 1, "count": 1}])
    assert status == 200 and [r["status"] for r in res] == [200, 200]
    _, _, single = await api.call("GET", f"/v1/shards/{sid}")
    assert res[0]["data"] == single == body and res[0]["segments"] == 3
    start, end = h.frame_offset(1), h.frame_offset(2)
    assert res[1]["data"] == body[:HEADER_BYTES] + body[start:end]


async def test_bad_ops_fail_alone_and_store_nothing(api: Api, node: Node) -> None:
    good, _, _, good_body = make_shard(index=0, frames=1, last=200)
    bad, h, _, bad_body = make_shard(index=1, frames=2, last=200)
    corrupt = bytearray(bad_body)
    corrupt[h.frame_offset(1) + FRAME_HEAD_BYTES + 3] ^= 1
    other, _, _, other_body = make_shard(index=2, frames=1, last=200)
    status, res = await batch(api, [
        {"op": "put", "id": bad, "segments": 2, "data": bytes(corrupt)},
        {"op": "put", "id": good, "segments": 1, "data": good_body},
        {"op": "put", "id": other, "segments": 1, "data": good_body},  # header names another
        {"op": "put", "id": other, "segments": 2, "data": other_body},  # wrong frame count
        {"op": "get", "id": other, "first": 0, "count": 1},
        {"op": "launch", "id": good},
    ])
    assert status == 200
    assert [r["status"] for r in res] == [409, 201, 400, 400, 404, 400]
    assert res[2]["error"] == "header_mismatch" and res[3]["error"] == "segment_count_mismatch"
    assert shard_path(node, good).exists()
    assert not shard_path(node, bad).exists() and not shard_path(node, other).exists()


async def test_body_must_match_its_signed_digest(api: Api, node: Node) -> None:
    sid, _, _, body = make_shard(index=0, frames=1, last=100)
    ops = [{"op": "put", "id": sid, "segments": 1, "data": body}]
    other = msgpack.packb({"ops": []}, use_bin_type=True)
    status, _ = await batch(api, ops, signed_body=other)  # body swapped after signing
    assert status == 401
    raw = msgpack.packb({"ops": ops}, use_bin_type=True)
    headers = sign(node.secret, "POST", "/v1/batch", "n1")  # digest not signed at all
    assert (await api.call("POST", "/v1/batch", signed=False, headers=headers,
                           data=raw))[0] == 401
    headers = sign(b"x" * 32, "POST", "/v1/batch", "n1", body_sha256=body_digest(raw))
    assert (await api.call("POST", "/v1/batch", signed=False, headers=headers,
                           data=raw))[0] == 401
    assert not shard_path(node, sid).exists()
    assert (await batch(api, [], body=b"\xc1junk", signed_body=b"\xc1junk"))[0] == 400


async def test_corrupt_shard_at_rest_answers_409_and_is_quarantined(api: Api, node: Node) -> None:
    sid, h, _, body = make_shard(index=3, frames=2, last=500)
    await put_shard(api, body, sid)
    flip(node, sid, h.frame_offset(0) + FRAME_HEAD_BYTES + 11)
    status, res = await batch(api, [{"op": "get", "id": sid, "first": 0, "count": 2}])
    assert status == 200 and res[0]["status"] == 409 and "data" not in res[0]
    assert not shard_path(node, sid).exists()
    [side] = quarantined(node, sid)
    assert "segment 0" in side["reason"]


async def test_batched_put_refuses_what_a_streamed_put_refuses(api: Api, node: Node) -> None:
    """The batch's frame check (in place, FrameScanner as the streamed PUT's) answers the
    same errors as the streamed PUT (`test_node_api.test_put_refuses_malformed_bodies`)."""
    sid, h, blocks, body = make_shard(index=2, frames=3, block_size=1024)
    corrupt = bytearray(body)
    corrupt[h.frame_offset(1) + FRAME_HEAD_BYTES + 3] ^= 1
    cases = [
        (sid, body[:-1], 3, "truncated"),
        (sid, body[:HEADER_BYTES - 1], 3, "truncated"),
        (sid, h.pack() + pack_frame(h, 0, b"short") + pack_frame(h, 1, blocks[1]), 2,
         "bad_frame_layout"),
        (sid, bytes(corrupt), 3, "corrupt"),
    ]
    status, res = await batch(api, [{"op": "put", "id": s, "segments": n, "data": data}
                                    for s, data, n, _ in cases])
    assert status == 200
    assert [(r["status"], r["error"]) for r in res] == [
        (409 if c == "corrupt" else 400, c) for *_, c in cases]
    assert "segment 1" in str(res[-1]["message"])
    assert not shard_path(node, sid).exists()
