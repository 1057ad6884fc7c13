"""The restored copy of an archived version is repaired and counted like any stripe.

A completed RestoreObject makes a copy in STANDARD stripes that every GET reads for the days
asked; the stripe index marks it "restored", and before this repair, the rebalancer, the
deep scrub and `tessera status` skipped it: a shard the copy lost stayed lost for the whole
restore (losses piling up until GETs failed while the archive still held the data), and
status reported full redundancy meanwhile.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ops.admincli import admin_request
from storage.records import PartLayout
from storage.shards.ids import shard_id
from tests.held_shards import HeldShard
from tests.integration.cluster import LocalCluster, wait_for

FAST = {"TESSERA_REPAIR_SWEEP_S": "0.5", "TESSERA_REPAIR_DOWN_GRACE_S": "3600",
        "TESSERA_ORPHAN_GRACE_S": "5"}
DAY = 10.0
DEADLINE_S = 60.0


def copy_parts(c: LocalCluster, key: str) -> list[PartLayout]:
    return [PartLayout(**p) for p in c.manifest("restored", key).restore.get("parts") or []]


def shard_path(c: LocalCluster, node: str, p: PartLayout, index: int) -> HeldShard:
    """The shard where the node reads it (a file, or a packed record), used like a Path."""
    return c.shard(node, shard_id(p.stripe_id, index))


def present(c: LocalCluster, p: PartLayout) -> int:
    return sum(1 for i, n in enumerate(p.nodes) if n and shard_path(c, n, p, i).is_file())


def test_restored_copy_missing_a_shard_is_rebuilt_and_counted(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               ) -> None:
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)
    c = LocalCluster(tmp_path / "data", up_args=["--day-seconds", str(DAY)]).start()
    try:
        s3 = c.client()
        s3.create_bucket(Bucket="restored")
        body = random.Random(5).randbytes(1_500_000) + os.urandom(7)
        s3.put_object(Bucket="restored", Key="o", Body=body, StorageClass="GLACIER")
        scanned = admin_request("GET", "/status", env=c.env)["stripes"]["scanned"]
        s3.restore_object(Bucket="restored", Key="o", RestoreRequest={
            "Days": 100, "GlacierJobParameters": {"Tier": "Expedited"}})
        wait_for(lambda: copy_parts(c, "o"), "the restore to complete", DEADLINE_S)
        (p,) = copy_parts(c, "o")
        assert present(c, p) == p.k + p.m
        # the copy's stripe is counted (was: only the archived stripe)
        assert admin_request("GET", "/status", env=c.env)["stripes"]["scanned"] == scanned + 1
        victim = next(i for i, n in enumerate(p.nodes) if n)
        shard_path(c, str(p.nodes[victim]), p, victim).unlink()  # gone from an up node
        wait_for(lambda: present(c, copy_parts(c, "o")[0]) == p.k + p.m,
                 "the restored copy back at k+m", DEADLINE_S)
        assert s3.get_object(Bucket="restored", Key="o")["Body"].read() == body
    finally:
        c.stop()
