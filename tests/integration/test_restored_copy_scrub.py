"""The deep scrub checks a restored copy of an archived version under the copy's
own key (`archive_classes.readable`): a parity shard of the copy rewritten with other bytes under
valid checksums (no GET reads parity while the data shards are whole) must be found and
rewritten. The restored-copy branch of `DeepScrubber._codec` had no test."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from storage.testing.lies import lie_about
from tests.integration.cluster import LocalCluster, wait_for
from tests.integration.test_restored_copy_repair import copy_parts, shard_path

FAST = {"TESSERA_REPAIR_SWEEP_S": "0.5", "TESSERA_REPAIR_DOWN_GRACE_S": "3600",
        "TESSERA_ORPHAN_GRACE_S": "5", "TESSERA_DEEP_SCRUB_RATE_MBPS": "64",
        "TESSERA_DEEP_SCRUB_PAUSE_S": "0.5"}
DEADLINE_S = 60.0


def test_deep_scrub_finds_a_lie_in_a_restored_copy(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)
    c = LocalCluster(tmp_path / "data", up_args=["--day-seconds", "10"]).start()
    try:
        s3 = c.client()
        s3.create_bucket(Bucket="restored")
        body = random.Random(6).randbytes(1_500_000) + os.urandom(7)
        s3.put_object(Bucket="restored", Key="o", Body=body, StorageClass="GLACIER")
        s3.restore_object(Bucket="restored", Key="o", RestoreRequest={
            "Days": 100, "GlacierJobParameters": {"Tier": "Expedited"}})
        wait_for(lambda: copy_parts(c, "o"), "the restore to complete", DEADLINE_S)
        (p,) = copy_parts(c, "o")
        index = p.k  # a parity shard
        node = p.nodes[index]
        assert node is not None
        path = shard_path(c, node, p, index)
        original = path.read_bytes()
        assert lie_about(path, seed=6, segments=None) != original

        def honest_again() -> bool:
            now = copy_parts(c, "o")[0]
            n = now.nodes[index]
            return bool(n) and shard_path(c, str(n), now, index).is_file() and \
                shard_path(c, str(n), now, index).read_bytes() == original

        wait_for(honest_again, "the deep scrub to find the lie in the restored copy",
                 DEADLINE_S)
        assert s3.get_object(Bucket="restored", Key="o")["Body"].read() == body
    finally:
        c.stop()
