"""Contract of the node HTTP API (/v1), against a real `python -m nodes` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from storage.shards.auth import TRAILER_BYTES, sign
from storage.shards.format import FRAME_HEAD_BYTES, HEADER_BYTES, pack_frame
from tests.contract.node_harness import (  # noqa: F401 - fixtures
    MAX_SHARD_BYTES,
    READY_TIMEOUT_S,
    REPO,
    WINDOW_S,
    Api,
    Node,
    api,
    flip,
    free_port,
    http,
    make_shard,
    node,
    put_shard,
    quarantined,
    raw_http,
    request_head,
    shard_path,
    start_node,
    stop_node,
    tree,
    wait_for_log,
)

__all__ = ["api", "http", "node"]  # fixtures, used by name


# -- data operations ---------------------------------------------------------------------------

async def test_put_get_range_stat_list_delete(api: Api, node: Node) -> None:
    sid, h, blocks, body = make_shard(index=3, frames=12, block_size=256 * 1024, last=777)
    status, doc = await api.json("PUT", f"/v1/shards/{sid}", data=body,
                                 headers={"X-Tessera-Segments": "12"})
    assert status == 201, doc
    assert doc == {"id": sid, "bytes": len(body), "segments": 12}
    assert shard_path(node, sid).read_bytes() == body
    assert list((node.data / "tmp").iterdir()) == []

    status, headers, got = await api.call("GET", f"/v1/shards/{sid}")
    assert status == 200 and got == body
    assert headers["X-Tessera-Segments"] == "12"
    assert int(headers["Content-Length"]) == len(body)

    status, headers, got = await api.call("GET", f"/v1/shards/{sid}?first=4&count=3")
    assert status == 200 and headers["X-Tessera-Segments"] == "12"
    assert got == h.pack() + b"".join(pack_frame(h, i, blocks[i]) for i in range(4, 7))
    status, _, got = await api.call("GET", f"/v1/shards/{sid}?first=10")
    assert got == h.pack() + body[h.frame_offset(10):]
    status, _, got = await api.call("GET", f"/v1/shards/{sid}?count=0")
    assert status == 200 and got == h.pack()
    status, doc = await api.json("GET", f"/v1/shards/{sid}?first=13")
    assert status == 416 and doc["error"] == "invalid_range"
    status, doc = await api.json("GET", f"/v1/shards/{sid}?first=-1")
    assert status == 400 and doc["error"] == "bad_request"

    status, doc = await api.json("GET", f"/v1/shards/{sid}/stat")
    assert status == 200
    assert {k: doc[k] for k in ("id", "size", "segments", "k", "m", "index")} == {
        "id": sid, "size": len(body), "segments": 12, "k": 4, "m": 2, "index": 3}
    assert doc["mtime"] > 0

    status, doc = await api.json("GET", "/v1/shards?after=&limit=10000")
    assert status == 200 and sid in doc["shards"] and doc["shards"] == sorted(doc["shards"])
    status, doc = await api.json("GET", f"/v1/shards?after={sid}")
    assert sid not in doc["shards"]

    status, doc = await api.json("POST", f"/v1/shards/{sid}/verify")
    assert status == 200 and doc["corrupt_segments"] == [] and doc["quarantined"] is False

    status, _, got = await api.call("DELETE", f"/v1/shards/{sid}")
    assert status == 204 and got == b""
    status, _, _ = await api.call("DELETE", f"/v1/shards/{sid}")
    assert status == 204
    assert not shard_path(node, sid).exists()
    for path in (f"/v1/shards/{sid}", f"/v1/shards/{sid}/stat"):
        status, doc = await api.json("GET", path)
        assert status == 404 and doc["error"] == "not_found"
    status, doc = await api.json("POST", f"/v1/shards/{sid}/verify")
    assert status == 404


async def test_list_pages(api: Api) -> None:
    ids = []
    for i in range(5):
        sid, _, _, body = make_shard(index=i, frames=1)
        assert (await api.call("PUT", f"/v1/shards/{sid}", data=body))[0] == 201
        ids.append(sid)
    seen: list[str] = []
    after = ""
    while True:
        status, doc = await api.json("GET", f"/v1/shards?after={after}&limit=2")
        assert status == 200 and len(doc["shards"]) <= 2
        seen += doc["shards"]
        if not doc["truncated"]:
            break
        after = doc["shards"][-1]
    assert seen == sorted(seen) and set(ids) <= set(seen)
    for bad in ("after=..%2F", "limit=0", "limit=x", "limit=10001"):
        assert (await api.json("GET", f"/v1/shards?{bad}"))[0] == 400
    for sid in ids:
        await api.call("DELETE", f"/v1/shards/{sid}")


async def test_health(api: Api) -> None:
    status, doc = await api.json("GET", "/v1/health")
    assert status == 200
    assert doc["node_id"] == "n1" and doc["zone"] == "az1" and doc["status"] == "ok"
    assert doc["free_bytes"] > 0 and doc["used_bytes"] >= 0 and doc["shards"] >= 0
    assert 0 < doc["started"] <= time.time()  # a restart changes it (the repair sweep looks)


# -- refused uploads ---------------------------------------------------------------------------

async def assert_nothing_stored(api: Api, node: Node, sid: str) -> None:
    assert not shard_path(node, sid).exists()
    assert list((node.data / "tmp").iterdir()) == []
    assert (await api.call("GET", f"/v1/shards/{sid}"))[0] == 404


async def test_put_refuses_corrupt_frame(api: Api, node: Node) -> None:
    sid, h, _, body = make_shard(frames=4)
    bad = bytearray(body)
    bad[h.frame_offset(2) + FRAME_HEAD_BYTES + 9] ^= 0x04
    status, doc = await api.json("PUT", f"/v1/shards/{sid}", data=bytes(bad))
    assert status == 409 and doc["error"] == "corrupt" and "segment 2" in doc["message"]
    await assert_nothing_stored(api, node, sid)


async def test_put_refuses_corrupt_header(api: Api, node: Node) -> None:
    sid, _, _, body = make_shard(frames=2)
    bad = bytearray(body)
    bad[5] ^= 1
    status, doc = await api.json("PUT", f"/v1/shards/{sid}", data=bytes(bad))
    assert status == 409 and doc["error"] == "corrupt"
    await assert_nothing_stored(api, node, sid)


async def test_put_refuses_malformed_bodies(api: Api, node: Node) -> None:
    sid, h, blocks, body = make_shard(index=2, frames=3)
    cases = [
        (body[:-1], "truncated"),                     # trailing partial frame
        (body[:HEADER_BYTES - 1], "truncated"),       # not even a header
        (b"", "truncated"),
        (make_shard(index=2)[3], "header_mismatch"),  # another stripe under this id
        (make_shard(index=1)[3], "header_mismatch"),  # another index
        # a short frame that is not the last one breaks the computable offsets
        (h.pack() + pack_frame(h, 0, b"short") + pack_frame(h, 1, blocks[1]), "bad_frame_layout"),
    ]
    for data, code in cases:
        status, doc = await api.json("PUT", f"/v1/shards/{sid}", data=data)
        assert (status, doc["error"]) == (400, code)
    for announced in ("2", "4", "x"):
        status, doc = await api.json("PUT", f"/v1/shards/{sid}", data=body,
                                     headers={"X-Tessera-Segments": announced})
        assert status == 400, doc
    await assert_nothing_stored(api, node, sid)


async def test_put_refuses_oversized_body(node: Node, api: Api) -> None:
    sid = make_shard()[0]
    path = f"/v1/shards/{sid}"
    head = request_head(node, "PUT", path,  # the limit is on the shard; its MAC trailer is extra
                        {"Content-Length": str(MAX_SHARD_BYTES + TRAILER_BYTES + 1)})
    answer = await raw_http(node, head)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"too_large"' in answer
    await assert_nothing_stored(api, node, sid)


async def test_client_disconnect_mid_frame_commits_nothing(node: Node, api: Api) -> None:
    sid, h, _, body = make_shard(frames=6, block_size=64 * 1024)
    rid = uuid.uuid4().hex
    path = f"/v1/shards/{sid}"
    head = request_head(node, "PUT", path, {"Content-Length": str(len(body)),
                                            "X-Request-Id": rid})
    cut = h.frame_offset(4) + FRAME_HEAD_BYTES + 1000  # inside frame 4
    await raw_http(node, head, body[:cut], read=False)
    rec = await wait_for_log(node, rid)
    assert rec["status"] == 400 and rec["op"] == "put"
    await assert_nothing_stored(api, node, sid)


# -- authentication ----------------------------------------------------------------------------

async def test_unsigned_and_badly_signed_requests_are_refused(api: Api, node: Node) -> None:
    sid, _, _, body = make_shard()
    path = f"/v1/shards/{sid}"
    status, doc = await api.json("PUT", path, data=body, signed=False)
    assert status == 401 and doc["error"] == "unauthorized"
    status, doc = await api.json("PUT", path, data=body, secret=os.urandom(32))
    assert status == 401 and doc["message"] == "bad signature"
    assert node.secret.hex() not in json.dumps(doc)
    # signed for another request
    hdrs = sign(node.secret, "GET", "/v1/health", "n1")
    status, _, _ = await api.call("GET", "/v1/shards", signed=False, headers=hdrs)
    assert status == 401
    hdrs = sign(node.secret, "GET", path, "n1")
    status, _, _ = await api.call("DELETE", path, signed=False, headers=hdrs)
    assert status == 401
    # signed for another node: a captured request cannot be replayed elsewhere
    hdrs = sign(node.secret, "GET", "/v1/health", "n2")
    assert (await api.call("GET", "/v1/health", signed=False, headers=hdrs))[0] == 401
    # signed without the query string it was sent with
    hdrs = sign(node.secret, "GET", "/v1/shards", "n1")
    assert (await api.call("GET", "/v1/shards?limit=1", signed=False, headers=hdrs))[0] == 401
    for path_ in ("/v1/health", "/v1/shards", f"/v1/shards/{sid}/stat"):
        assert (await api.call("GET", path_, signed=False))[0] == 401
    await assert_nothing_stored(api, node, sid)


async def test_replayed_request_is_refused(api: Api) -> None:
    hdrs = sign(api.node.secret, "GET", "/v1/health", "n1")
    status, _, _ = await api.call("GET", "/v1/health", signed=False, headers=hdrs)
    assert status == 200
    status, doc = await api.json("GET", "/v1/health", signed=False, headers=hdrs)
    assert status == 401 and doc["message"] == "replayed request"


async def test_stale_or_future_date_is_refused(api: Api) -> None:
    for skew in (-3600, WINDOW_S + 30):
        hdrs = sign(api.node.secret, "GET", "/v1/health", "n1", now=time.time() + skew)
        status, doc = await api.json("GET", "/v1/health", signed=False, headers=hdrs)
        assert status == 401 and doc["message"] == "request outside the replay window"


# -- hostile shard ids -------------------------------------------------------------------------

BAD_IDS = ["abc", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "..%2F..%2Fetc%2Fpasswd",
           "%2E%2E%2F%2E%2E%2F" + "a" * 32 + ".1", "A" * 32 + ".1", "a" * 32 + ".01",
           "a" * 32 + ".1%0A", "a" * 32 + ".999", "a" * 32 + ".1%00"]


async def test_bad_shard_ids_are_refused_and_touch_nothing(api: Api, node: Node) -> None:
    sentinel = node.base / "etc" / "passwd"
    sentinel.parent.mkdir(exist_ok=True)
    sentinel.write_text("root:x:0:0\n")
    before = tree(node.base)
    _, _, _, body = make_shard()
    for bad in BAD_IDS:
        for method, suffix, data in (("PUT", "", body), ("GET", "", None), ("DELETE", "", None),
                                     ("GET", "/stat", None), ("POST", "/verify", None)):
            status, doc = await api.json(method, f"/v1/shards/{bad}{suffix}", data=data)
            assert status == 400, (method, bad, status, doc)
            assert doc["error"] == "invalid_shard_id"

    def shards_and_all(t: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        # the replay watermark moves on with the clock whatever the requests were
        return {p: v for p, v in t.items() if not p.endswith("/replay-watermark")}

    assert shards_and_all(tree(node.base)) == shards_and_all(before)
    assert sentinel.read_text() == "root:x:0:0\n"


async def test_dot_segments_in_raw_request_line_touch_nothing(node: Node) -> None:
    before = tree(node.base)
    _, _, _, body = make_shard()
    for path in ("/v1/shards/../../etc/passwd", "/v1/shards/%2e%2e/%2e%2e/etc/passwd"):
        head = request_head(node, "PUT", path, {"Content-Length": str(len(body))})
        answer = await raw_http(node, head, body)
        status = int(answer.split(b" ", 2)[1])
        assert status in (400, 401, 404), answer[:200]
    assert tree(node.base) == before


# -- corruption at rest ------------------------------------------------------------------------

async def test_corrupt_first_frame_answers_409_and_quarantines(api: Api, node: Node) -> None:
    sid, h, _, body = make_shard(frames=3)
    await put_shard(api, body, sid)
    flip(node, sid, h.frame_offset(1) + FRAME_HEAD_BYTES + 7)
    status, doc = await api.json("GET", f"/v1/shards/{sid}?first=1")
    assert status == 409 and doc["error"] == "corrupt"
    assert not shard_path(node, sid).exists()
    [side] = quarantined(node, sid)
    assert side["shard_id"] == sid and "segment 1" in side["reason"]
    assert (await api.call("GET", f"/v1/shards/{sid}"))[0] == 404


async def test_corrupt_later_frame_truncates_stream_and_quarantines(api: Api, node: Node) -> None:
    sid, h, _, body = make_shard(frames=400, block_size=8192, last=None)  # ~3.2 MiB
    await put_shard(api, body, sid)
    flip(node, sid, h.frame_offset(300) + FRAME_HEAD_BYTES + 100)
    got = b""
    url = URL(node.url + f"/v1/shards/{sid}", encoded=True)
    async with api.http.get(url, headers=sign(node.secret, "GET", f"/v1/shards/{sid}", "n1")) as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(body)
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in r.content.iter_any():
                got += chunk
    assert len(got) <= h.frame_offset(300) and got == body[:len(got)]
    assert not shard_path(node, sid).exists()
    assert len(quarantined(node, sid)) == 1


async def test_verify_reports_and_quarantines(api: Api, node: Node) -> None:
    sid, h, _, body = make_shard(frames=6)
    await put_shard(api, body, sid)
    held = (await api.json("GET", "/v1/scrub"))[1]["quarantined"]
    flip(node, sid, h.frame_offset(2) + FRAME_HEAD_BYTES)
    flip(node, sid, h.frame_offset(5) + 2)  # damaged length field
    status, doc = await api.json("POST", f"/v1/shards/{sid}/verify")
    assert status == 200 and doc["corrupt_segments"] == [2, 5] and doc["quarantined"] is True
    assert not shard_path(node, sid).exists() and len(quarantined(node, sid)) == 1
    # the count operators see (GET /v1/scrub, shown on the console's node cards)
    assert (await api.json("GET", "/v1/scrub"))[1]["quarantined"] == held + 1


async def test_corrupt_header_at_rest(api: Api, node: Node) -> None:
    sid, _, _, body = make_shard(frames=2)
    await put_shard(api, body, sid)
    flip(node, sid, 12)
    status, doc = await api.json("GET", f"/v1/shards/{sid}/stat")
    assert status == 409 and doc["error"] == "corrupt"
    assert len(quarantined(node, sid)) == 1


# -- observability -----------------------------------------------------------------------------

def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_and_logs(api: Api, node: Node) -> None:
    sid, h, _, body = make_shard(frames=3)
    await put_shard(api, body, sid)
    assert (await api.call("GET", f"/v1/shards/{sid}"))[0] == 200
    probe = "probe-" + uuid.uuid4().hex
    assert (await api.call("GET", "/v1/health", headers={"X-Request-Id": probe}))[0] == 200
    rid = "test-" + uuid.uuid4().hex
    assert (await api.call("GET", f"/v1/shards/{sid}/stat",
                           headers={"X-Request-Id": rid}))[0] == 200
    assert (await api.call("GET", "/v1/health", signed=False))[0] == 401

    url = URL(node.url + "/metrics")
    async with api.http.get(url) as r:  # unauthenticated
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        m = samples(await r.text())
    assert m[("tessera_node_requests_total", (("op", "put"), ("status", "201")))] >= 1
    assert m[("tessera_node_requests_total", (("op", "get"), ("status", "200")))] >= 1
    assert m[("tessera_node_requests_total", (("op", "health"), ("status", "401")))] >= 1
    assert m[("tessera_node_request_seconds_count", (("op", "put"), ("status", "201")))] >= 1
    assert m[("tessera_node_bytes_in_total", ())] >= len(body)
    assert m[("tessera_node_bytes_out_total", ())] >= len(body)
    assert m[("tessera_node_shard_writes_total", ())] >= 1
    assert m[("tessera_node_shard_reads_total", ())] >= 1
    assert ("tessera_node_quarantined_shards_total", ()) in m
    assert m[("tessera_node_shards", ())] >= 1

    rec = await wait_for_log(node, rid)
    assert rec["method"] == "GET" and rec["path"] == f"/v1/shards/{sid}/stat"
    assert rec["status"] == 200 and {"ts", "level", "duration_ms", "bytes"} <= set(rec)
    text = node.log.read_text()
    assert probe not in text  # health probes are logged at debug level only
    assert node.secret.hex() not in text
    for line in text.splitlines():
        json.loads(line)


# -- process lifecycle -------------------------------------------------------------------------

async def test_config_mode_and_clean_sigterm(tmp_path: Path,
                                             http: aiohttp.ClientSession) -> None:
    port = free_port()
    cfg = tmp_path / "cluster.toml"
    cfg.write_text(f"""
data_dir = "data"
[cluster]
node_request_window_s = 120
[profiles.standard]
k = 1
m = 1
[[nodes]]
id = "n1"
zone = "az1"
address = "127.0.0.1:{port}"
[[nodes]]
id = "n2"
zone = "az2"
address = "127.0.0.1:1"
""")
    proc, url, _ = start_node(tmp_path, ["--config", str(cfg), "--id", "n1"])
    try:
        assert url == f"http://127.0.0.1:{port}"
        secret = bytes.fromhex((tmp_path / "data/secrets/cluster.key").read_text())
        async with http.get(url + "/v1/health", headers=sign(secret, "GET", "/v1/health", "n1")) as r:
            assert r.status == 200 and (await r.json())["zone"] == "az1"
        assert (tmp_path / "data/nodes/n1/shards").is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        stop_node(proc)


def test_unknown_node_in_config_fails_fast(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[profiles.standard]\nk = 1\nm = 1\n[[nodes]]\nid = "a"\nzone = "z1"\n'
                   'address = "127.0.0.1:1"\n[[nodes]]\nid = "b"\nzone = "z2"\n'
                   'address = "127.0.0.1:2"\n')
    r = subprocess.run([sys.executable, "-m", "nodes", "--config", str(cfg), "--id", "zz"],
                       cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and "not in" in r.stderr and r.stdout == ""
