"""Acknowledged writes survive ANY m further failures, on real processes.

A storage node is made to fail every shard write from its first while it still answers its
health probe (`storage/testing/node_faults.py`), or to die (SIGKILL) on its Nth shard write;
PUTs of every write path (batched small shards, whole 1 MiB shards, streamed multi-segment
shards), a multipart upload and a CopyObject go on through boto3. Each acknowledged
object must name k+m distinct nodes, none the failed one, zone-safely (its failed shard was
sent to a spare before the ack), and read back intact after the failed node and then m MORE
nodes holding its shards are killed. Before the spares (main at 5f9d0ed) such a write was
acknowledged with k+1 shards and lost data to the second kill.
"""

from __future__ import annotations

import itertools
import random
import re
import shutil
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.placement import zone_safe
from tests.integration.cluster import LocalCluster

K, M = 4, 2
SIZES = (10_000, 1 << 20, 3 * (1 << 20) + 5)  # batched, whole, streamed


def _start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> LocalCluster:
    monkeypatch.setenv("TESSERA_TEST_NODE_FAULT", fault)
    monkeypatch.setenv("TESSERA_REPAIR_SWEEP_S", "3600")  # no sweep: the writes alone count
    return LocalCluster(tmp_path / "data").start()


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    shutil.rmtree(tmp_path / "data", ignore_errors=True)


def _spared(c: LocalCluster) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{c.admin_port}/metrics",  # noqa: S310
                                timeout=10) as r:
        text = r.read().decode()
    m = re.search(r"^tessera_write_shards_spared_total (\S+)$", text, re.M)
    assert m is not None, "no tessera_write_shards_spared_total"
    return float(m.group(1))


def _write_all(c: LocalCluster, s3: Any, bucket: str, rounds: int) -> dict[str, bytes]:
    rnd = random.Random(7)
    s3.create_bucket(Bucket=bucket)
    data: dict[str, bytes] = {}
    for r in range(rounds):
        for size in SIZES:
            key = f"put-{r}-{size}"
            data[key] = rnd.randbytes(size)
            s3.put_object(Bucket=bucket, Key=key, Body=data[key])
    parts = [rnd.randbytes(5 << 20), rnd.randbytes(300_000)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="mpu")["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="mpu", UploadId=up, PartNumber=i + 1,
                            Body=p)["ETag"] for i, p in enumerate(parts)]
    s3.complete_multipart_upload(Bucket=bucket, Key="mpu", UploadId=up, MultipartUpload={
        "Parts": [{"ETag": e, "PartNumber": i + 1} for i, e in enumerate(etags)]})
    data["mpu"] = b"".join(parts)
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket,
                                                          "Key": f"put-0-{SIZES[2]}"})
    data["copy"] = data[f"put-0-{SIZES[2]}"]
    return data


def _placements(c: LocalCluster, bucket: str, keys: list[str],
                ) -> dict[str, list[list[str | None]]]:
    """Every object's stripes' nodes, each checked: k+m distinct, zone-safe."""
    from storage.config import load_config

    cfg = load_config(c.data / "tessera.toml")
    out: dict[str, list[list[str | None]]] = {}
    for key in keys:
        for p in c.manifest(bucket, key).parts:
            assert None not in p.nodes, f"{key} acknowledged with a shard missing: {p.nodes}"
            assert len(set(p.nodes)) == K + M, (key, p.nodes)
            assert zone_safe(p.nodes, cfg.nodes, M), (key, p.nodes)
            out.setdefault(key, []).append(p.nodes)
    return out


def _kill_m_more(c: LocalCluster, placements: list[list[str | None]], failed: str) -> None:
    """Kill the m nodes (besides the failed one) that hold shards of the most stripes at
    once: the worst pair for what was written."""
    ids = sorted({n for p in placements for n in p if n and n != failed})
    pair = max(itertools.combinations(ids, M),
               key=lambda ab: (sum(ab[0] in p and ab[1] in p for p in placements), ab))
    for nid in pair:
        c.kill(nid)


def _check(s3: Any, bucket: str, data: dict[str, bytes]) -> None:
    for key, body in data.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key


def test_failing_target_is_replaced_before_the_ack(
        cluster_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = _start(cluster_dir, monkeypatch, "n1:1:fail")
    try:
        s3 = c.client()
        data = _write_all(c, s3, "spares", rounds=3)
        placements = _placements(c, "spares", list(data))
        every = [p for ps in placements.values() for p in ps]
        assert all("n1" not in p for p in every), every  # it took no shard at all
        assert _spared(c) >= 1  # n1 was a target and its shards went elsewhere
        c.kill("n1")
        _kill_m_more(c, every, "n1")
        _check(s3, "spares", data)
    finally:
        c.stop()


def test_target_killed_on_its_nth_shard_write(
        cluster_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """n5 dies on its 4th shard write: the write it was taking then, and every one after,
    must hold k+m shards without it; those survive m more kills. (Objects n5 took a shard
    of before it died have already lost one: they must read back now, with n5 dead.)"""
    c = _start(cluster_dir, monkeypatch, "n5:4:die")
    try:
        s3 = c.client()
        data = _write_all(c, s3, "killed", rounds=3)
        # Stripe ids are random, so n5 is a target of about 2 in 3 stripes: in ~0.4% of runs
        # it has taken fewer than 4 shard writes by now. Write on until it has (the write it
        # died in was completed on a spare, which is what the counter says).
        rnd = random.Random(8)
        while _spared(c) < 1:
            assert len(data) < 200, "n5 never died on its 4th shard write"
            key = f"more-{len(data)}"
            data[key] = rnd.randbytes(10_000)
            s3.put_object(Bucket="killed", Key=key, Body=data[key])
        placements = _placements(c, "killed", list(data))
        c.kill("n5", signal.SIGKILL)  # (already dead: its own fault killed it)
        _check(s3, "killed", data)
        after = {k: v for k, v in data.items()
                 if all("n5" not in p for p in placements[k])}
        assert len(after) >= len(data) // 2, sorted(after)
        _kill_m_more(c, [p for k in after for p in placements[k]], "n5")
        _check(s3, "killed", after)
    finally:
        c.stop()
