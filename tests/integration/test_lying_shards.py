"""Lying shards on real processes: valid frame checksums, wrong bytes (issue 11).

A node cannot see such a shard (it has no keys); before this, every GET of the object
answered 500 forever. Now a read whose GCM tag fails finds the k shards that authenticate,
returns the right bytes, counts the liar and queues the stripe (no whole-shard quarantine);
repair rewrites the shard, and the deep scrub finds lies that no client read touches.
"""

from __future__ import annotations

import random
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ops.admincli import admin_request
from storage.records import ObjectVersion
from storage.shards.ids import shard_id
from storage.testing.lies import lie
from tests.held_shards import HeldShard
from tests.integration.cluster import LocalCluster

FAST = {"TESSERA_REPAIR_SWEEP_S": "0.5", "TESSERA_REPAIR_DOWN_GRACE_S": "2",
        "TESSERA_ORPHAN_GRACE_S": "5", "TESSERA_SCRUB_PAUSE_S": "0.5"}
DEADLINE_S = 45.0


def wait(what: str, cond: Callable[[], Any], timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def lying_found(c: LocalCluster, where: str) -> float:
    """`tessera_lying_shards_found_total{where}` from the gateway's /metrics."""
    url = f"http://127.0.0.1:{c.admin_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    m = re.search(rf'^tessera_lying_shards_found_total{{where="{where}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def status(c: LocalCluster) -> dict[str, Any]:
    return admin_request("GET", "/status", env=c.env)


def make_liar(c: LocalCluster, v: ObjectVersion, index: int) -> tuple[HeldShard, bytes, bytes]:
    """Rewrite shard `index` of the version's first part (its file, or its packed record):
    (the shard, original, lie)."""
    part = v.parts[0]
    node = part.nodes[index]
    assert node is not None
    shard = c.shard(node, shard_id(part.stripe_id, index))
    original = shard.read_bytes()
    told = lie(original, f"{index}/{shard.name}", segments=None)
    shard.write_bytes(told)
    return shard, original, told


def rebuilt_shard(c: LocalCluster, bucket: str, key: str, index: int) -> bytes | None:
    """The shard file the manifest now names for `index` (None while it is missing)."""
    part = c.manifest(bucket, key).parts[0]
    node = part.nodes[index]
    if node is None:
        return None
    shard = c.shard(node, shard_id(part.stripe_id, index))
    try:
        return shard.read_bytes()
    except FileNotFoundError:
        return None


def _cluster(tmp_path_factory: pytest.TempPathFactory, name: str,
             env: dict[str, str]) -> Iterator[LocalCluster]:
    """A cluster started with FAST and `env` in its environment, stopped after the module."""
    mp = pytest.MonkeyPatch()
    for k, v in {**FAST, **env}.items():
        mp.setenv(k, v)
    c = LocalCluster(tmp_path_factory.mktemp(name) / "data").start()
    try:
        yield c
    finally:
        c.stop()
        mp.undo()


@pytest.fixture(scope="module")
def reads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster whose deep scrub is off: only client reads can find a lie here."""
    yield from _cluster(tmp_path_factory, "lying", {"TESSERA_DEEP_SCRUB_RATE_MBPS": "0"})


@pytest.mark.parametrize("size", [3 * 2**20, 100_000], ids=["ec-stream", "small-batch"])
def test_get_survives_lying_shard_and_repair_rewrites_it(reads: LocalCluster,
                                                         size: int) -> None:
    c = reads
    s3 = c.client()
    bucket = "lies"
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)
    key = f"obj-{size}"
    body = random.Random(size).randbytes(size)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    v = c.manifest(bucket, key)
    before = lying_found(c, "read")
    # Shard 1 is a data shard, one of the k a read asks first.
    path, original, told = make_liar(c, v, 1)
    assert told != original and len(told) == len(original)

    for _ in range(2):  # every GET answers the right bytes (was: 500, forever)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    assert s3.get_object(Bucket=bucket, Key=key, Range="bytes=5-99")["Body"].read() == \
        body[5:100]
    assert lying_found(c, "read") == before + 1  # counted once, not once per GET
    wait("tessera status to count the lie",
         lambda: int((status(c).get("integrity") or {}).get("lying_found", {})
                     .get("read", 0)) >= 1)
    # Repair rewrites the shard: encoding is deterministic, so the rebuilt shard is the
    # original file again, wherever it now lives; the lie is gone from the live layout.
    wait("repair to rewrite the lying shard",
         lambda: rebuilt_shard(c, bucket, key, 1) == original)
    assert not (path.exists() and path.read_bytes() == told)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body


@pytest.fixture(scope="module")
def scrubbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster whose deep scrub runs fast and rests half a second between passes."""
    yield from _cluster(tmp_path_factory, "scrub", {"TESSERA_DEEP_SCRUB_RATE_MBPS": "64",
                                                    "TESSERA_DEEP_SCRUB_PAUSE_S": "0.5"})


def test_deep_scrub_finds_lies_no_client_reads(scrubbed: LocalCluster) -> None:
    c = scrubbed
    s3 = c.client()
    s3.create_bucket(Bucket="quiet")
    bodies = {"big": random.Random(1).randbytes(2_500_000),
              "small": random.Random(2).randbytes(90_000)}
    for key, body in bodies.items():
        s3.put_object(Bucket="quiet", Key=key, Body=body)
    wait("a deep scrub pass over both stripes", lambda: int(
        ((status(c).get("integrity") or {}).get("deep_scrub") or {})
        .get("stripes_checked", 0)) >= 2)
    # A parity shard of one and a data shard of the other: no read would pick a parity
    # shard while the data shards answer, so only the scrub can find that lie.
    liars = {"big": (4, *make_liar(c, c.manifest("quiet", "big"), 4)),
             "small": (0, *make_liar(c, c.manifest("quiet", "small"), 0))}
    wait("the deep scrub to find both lies", lambda: int(
        (status(c).get("integrity") or {}).get("lying_found", {}).get("scrub", 0)) >= 2)
    assert lying_found(c, "scrub") >= 2
    for key, (index, path, original, told) in liars.items():
        wait(f"repair to rewrite {key}'s lying shard",
             lambda key=key, index=index, original=original:
             rebuilt_shard(c, "quiet", key, index) == original)
        assert not (path.exists() and path.read_bytes() == told)
    assert lying_found(c, "read") == 0  # no client read was involved
    for key, body in bodies.items():
        assert s3.get_object(Bucket="quiet", Key=key)["Body"].read() == body
    assert lying_found(c, "read") == 0
