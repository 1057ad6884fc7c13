"""Small objects kept sealed in their manifest: the default path (`tessera up` with no flag)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.config import DEFAULT_INLINE_MAX_BYTES
from tests.integration.cluster import LocalCluster, files_holding

LIMIT = DEFAULT_INLINE_MAX_BYTES


@pytest.fixture
def inline_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    assert LIMIT >= 4096  # small objects are fast by default
    c = LocalCluster(tmp_path / "data").start()  # default settings
    yield c
    c.stop()


def test_small_objects_inline_large_ones_erasure_coded(inline_cluster: LocalCluster) -> None:
    s3 = inline_cluster.client()
    s3.create_bucket(Bucket="inline")
    rng = random.Random(7)
    marker = b"INLINE-PLAINTEXT-MARKER-"
    bodies = {
        "one": b"x",
        "small": (marker * 200)[:LIMIT],
        "big": rng.randbytes(LIMIT + 1),
    }
    for key, body in bodies.items():
        s3.put_object(Bucket="inline", Key=key, Body=body)
    for key, body in bodies.items():
        assert s3.get_object(Bucket="inline", Key=key)["Body"].read() == body
        if len(body) > 3:
            got = s3.get_object(Bucket="inline", Key=key, Range="bytes=1-3")["Body"].read()
            assert got == body[1:4]
    # Only the object above the limit has shards: one stripe of 4+2 files.
    files = [p for ps in inline_cluster.shard_files().values() for p in ps]
    assert len(files) == 6
    # The inline object is sealed: its plaintext is nowhere on disk, metadata included.
    assert files_holding(inline_cluster.data, [marker]) == []
    # Copy and delete work like for any object.
    s3.copy_object(Bucket="inline", Key="copy", CopySource={"Bucket": "inline", "Key": "small"})
    assert s3.get_object(Bucket="inline", Key="copy")["Body"].read() == bodies["small"]
    s3.delete_object(Bucket="inline", Key="small")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="inline")["Contents"]]
    assert keys == ["big", "copy", "one"]
