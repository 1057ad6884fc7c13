"""The parts of a multipart upload still open are acknowledged data: repaired and counted.

UploadPart answered 200, so its stripe is on the nodes; but the stripe index marks it
"part" (not "live") until CompleteMultipartUpload, and before this the repair sweep, the
repair queue, the rebalancer and `tessera status` all skipped such stripes. A part that lost
a shard stayed short of k+m for as long as the upload stayed open (hours for a large upload),
losses piled up across separate failures, and `tessera status` reported full redundancy
meanwhile; the completed object could then be unreadable.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from ops.admincli import admin_request
from storage.clusterstatus import fully_redundant
from storage.keyspace import part_key
from storage.multipart_records import Part
from storage.shards.ids import shard_id
from storage.testing.lies import lie_about
from tests.held_shards import HeldShard
from tests.integration.cluster import LocalCluster, stop_processes, wait_for

FAST = {"TESSERA_REPAIR_SWEEP_S": "0.5", "TESSERA_REPAIR_DOWN_GRACE_S": "3600",
        "TESSERA_ORPHAN_GRACE_S": "5", "TESSERA_SCRUB_PAUSE_S": "0.5",
        "TESSERA_REBALANCE_INTERVAL_S": "0.5", "TESSERA_DEEP_SCRUB_RATE_MBPS": "64",
        "TESSERA_DEEP_SCRUB_PAUSE_S": "0.5"}
DEADLINE_S = 45.0
BUCKET = "open"


@pytest.fixture(scope="module")
def oc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster whose down nodes stay 'unknown' (an hour's grace): only a shard missing
    from an up node is rebuilt here, and a down node's shards stay counted as not healthy."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in FAST.items():
            mp.setenv(k, v)
        c = LocalCluster(tmp_path_factory.mktemp("open-upload") / "data").start()
    c.client().create_bucket(Bucket=BUCKET)
    yield c
    stop_processes(oc_restarted)
    c.stop()


oc_restarted: list[subprocess.Popen] = []  # nodes the tests restarted by hand


def status(c: LocalCluster) -> dict[str, Any]:
    return admin_request("GET", "/status", env=c.env)


def open_part(c: LocalCluster, key: str, seed: int) -> tuple[str, bytes, Part]:
    """An upload with one 5 MiB + 3 byte part uploaded (acknowledged) and not completed."""
    s3 = c.client()
    up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    body = random.Random(seed).randbytes(5 * 2**20 + 3)
    s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=1, Body=body)
    return up, body, part_record(c, up)


def part_record(c: LocalCluster, upload_id: str) -> Part:
    raw = c.db_get(part_key(upload_id, 1))
    assert raw is not None
    return Part.decode(raw)


def shard_path(c: LocalCluster, node: str, p: Part, index: int) -> HeldShard:
    """The shard where the node reads it (a file, or a packed record), used like a Path."""
    return c.shard(node, shard_id(p.stripe_id, index))


def present(c: LocalCluster, p: Part) -> int:
    """Shards of the part's stripe on the nodes its record names now."""
    return sum(1 for i, n in enumerate(p.nodes) if n and shard_path(c, n, p, i).is_file())


def complete_and_read(c: LocalCluster, key: str, up: str, body: bytes) -> None:
    s3 = c.client()
    etag = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=up)["Parts"][0]["ETag"]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body


def test_open_upload_part_missing_a_shard_is_rebuilt(oc: LocalCluster) -> None:
    c = oc
    up, body, p = open_part(c, "rebuilt", seed=1)
    assert present(c, p) == p.k + p.m
    victim = next(i for i, n in enumerate(p.nodes) if n)
    shard_path(c, str(p.nodes[victim]), p, victim).unlink()  # gone from a node that is up
    # Repair puts it back while the upload is still open (was: never, the stripe is a part).
    wait_for(lambda: present(c, part_record(c, up)) == p.k + p.m,
             "the open upload's part back at k+m", DEADLINE_S)
    since = max(0.0, float(status(c)["time"]) - 0.001)
    wait_for(lambda: fully_redundant(status(c), since), "full redundancy", DEADLINE_S)
    complete_and_read(c, "rebuilt", up, body)


def test_status_counts_an_open_upload_part_short_of_shards(oc: LocalCluster) -> None:
    c = oc
    before = status(c)["stripes"]["scanned"]
    up, body, p = open_part(c, "counted", seed=2)
    assert status(c)["stripes"]["scanned"] == before + 1  # was: the part not counted at all
    node = next(n for n in p.nodes if n)
    # the stripes of completed objects with a shard on that node, then the part's own
    s3 = c.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    on_node = 1 + sum(node in part.nodes for k in keys for part in c.manifest(BUCKET, k).parts)
    c.kill(node)
    try:
        wait_for(lambda: any(n["id"] == node and n["state"] != "up"
                             for n in status(c)["nodes"]), "the node seen down", DEADLINE_S)
        doc = status(c)
        assert doc["stripes"]["by_healthy_shards"].get(str(p.k + p.m - 1)) == on_node, doc
        assert not fully_redundant(doc, 0.0)
    finally:
        oc_restarted.append(c.restart_node(node))
    wait_for(lambda: all(n["state"] == "up" for n in status(c)["nodes"]),
             "every node up again", DEADLINE_S)
    complete_and_read(c, "counted", up, body)


def test_open_part_survives_m_failures_after_status_says_redundant(oc: LocalCluster) -> None:
    """The end to end loss: a part loses a shard; once status reports full redundancy (a
    whole sweep pass since), two more nodes die, within m=2. The upload completes (200) and
    its object must read back. Before: status said redundant at once (the part was never
    looked at), the part was left at k-2 and the completed object answered 503."""
    c = oc
    up, body, p = open_part(c, "m-failures", seed=5)
    victim = next(i for i, n in enumerate(p.nodes) if n)
    shard_path(c, str(p.nodes[victim]), p, victim).unlink()
    since = max(0.0, float(status(c)["time"]) - 0.001)
    wait_for(lambda: fully_redundant(status(c), since), "full redundancy", DEADLINE_S)
    now = part_record(c, up)
    dead = [n for i, n in enumerate(now.nodes) if n and i != victim][:2]
    for n in dead:
        c.kill(n)
    try:
        wait_for(lambda: all(r["state"] != "up" for r in status(c)["nodes"] if r["id"] in dead),
                 "the two nodes seen down", DEADLINE_S)
        complete_and_read(c, "m-failures", up, body)
    finally:
        oc_restarted.extend(c.restart_node(n) for n in dead)
        wait_for(lambda: all(r["state"] == "up" for r in status(c)["nodes"]),
                 "every node up again", DEADLINE_S)


def test_deep_scrub_finds_a_lie_in_an_open_upload_part(oc: LocalCluster) -> None:
    """A parity shard of an open part rewritten with other bytes under valid checksums:
    no read meets it (the upload is open), so only the deep scrub can; it must, and repair
    must rewrite it with the part's key (was: parts were never scrubbed)."""
    c = oc
    up, body, p = open_part(c, "lying", seed=4)
    index = p.k  # a parity shard
    node = p.nodes[index]
    assert node is not None
    path = shard_path(c, node, p, index)
    original = path.read_bytes()
    lie = lie_about(path, seed=4, segments=None)
    assert lie != original

    def honest_again() -> bool:
        now = part_record(c, up)
        n = now.nodes[index]
        return bool(n) and shard_path(c, str(n), now, index).is_file() and \
            shard_path(c, str(n), now, index).read_bytes() == original

    wait_for(honest_again, "the deep scrub to find the lie and repair to rewrite it",
             DEADLINE_S)
    complete_and_read(c, "lying", up, body)


def node_cli(c: LocalCluster, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "ops.cli", "node", *args],
                       env={**os.environ, **c.env}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_drain_moves_an_open_upload_part(oc: LocalCluster) -> None:
    """Last in the module: it leaves a node drained. The drain moves the open part's shard
    off the node too (was: reported drained while the node still held it)."""
    c = oc
    up, body, p = open_part(c, "drained", seed=3)
    index, victim = next((i, n) for i, n in enumerate(p.nodes) if n)
    node_cli(c, "drain", victim)

    def drained() -> bool:
        rows = {n["id"]: n for n in json.loads(node_cli(c, "list", "--json"))["nodes"]}
        return (rows[victim].get("drain") or {}).get("drained") is True

    wait_for(drained, "the drain to finish", DEADLINE_S)
    wait_for(lambda: victim not in part_record(c, up).nodes, "the part's shard moved off",
             DEADLINE_S)
    assert present(c, part_record(c, up)) == p.k + p.m
    wait_for(lambda: not shard_path(c, victim, p, index).exists(),
             "the drained copy collected", DEADLINE_S)
    complete_and_read(c, "drained", up, body)
