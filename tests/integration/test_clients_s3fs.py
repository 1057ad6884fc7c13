"""fsspec's s3fs (aiobotocore underneath) against a real cluster."""

from __future__ import annotations

import random

import pytest

from tests.integration.cluster import LocalCluster

s3fs = pytest.importorskip("s3fs")

MIB = 1024 * 1024
BUCKET = "s3fs-flow"


@pytest.fixture
def fs(cluster: LocalCluster):
    fs = s3fs.S3FileSystem(
        key=cluster.env["AWS_ACCESS_KEY_ID"], secret=cluster.env["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=cluster.endpoint, skip_instance_cache=True, use_listings_cache=False,
        client_kwargs={"region_name": cluster.env["AWS_DEFAULT_REGION"]},
        config_kwargs={"retries": {"total_max_attempts": 1}})
    fs.retries = 1  # s3fs's own loop around each call: attempts in all, 1 = no retry
    yield fs


def test_s3fs_files_and_listings(fs) -> None:
    rnd = random.Random(3)
    big = rnd.randbytes(12 * MIB)
    fs.mkdir(BUCKET)
    assert BUCKET in fs.ls("")
    with fs.open(f"{BUCKET}/a/one.txt", "wb") as f:
        f.write(b"hello")
    # Written in 1 MiB pieces through a 5 MiB block: a streamed multipart upload.
    with fs.open(f"{BUCKET}/a/big.bin", "wb", block_size=5 * MIB) as f:
        for i in range(0, len(big), MIB):
            f.write(big[i:i + MIB])
    fs.pipe(f"{BUCKET}/b/c/two", b"2")
    fs.pipe({f"{BUCKET}/b/d{i}": bytes([i]) * i for i in range(1, 4)})

    with fs.open(f"{BUCKET}/a/big.bin", "rb", block_size=MIB) as f:
        f.seek(5 * MIB - 3)
        assert f.read(10) == big[5 * MIB - 3:5 * MIB + 7]
        f.seek(0)
        assert f.read() == big
    assert fs.cat(f"{BUCKET}/a/one.txt") == b"hello"
    assert fs.cat_file(f"{BUCKET}/a/big.bin", start=100, end=200) == big[100:200]
    assert fs.info(f"{BUCKET}/a/big.bin")["ETag"].endswith('-3"')

    assert fs.ls(BUCKET, detail=False) == [f"{BUCKET}/a", f"{BUCKET}/b"]
    entries = {e["name"]: e for e in fs.ls(f"{BUCKET}/a", detail=True)}
    assert {n: (e["type"], e["size"]) for n, e in entries.items()} == {
        f"{BUCKET}/a/big.bin": ("file", 12 * MIB), f"{BUCKET}/a/one.txt": ("file", 5)}
    everything = [f"{BUCKET}/a/big.bin", f"{BUCKET}/a/one.txt", f"{BUCKET}/b/c/two",
                  f"{BUCKET}/b/d1", f"{BUCKET}/b/d2", f"{BUCKET}/b/d3"]
    assert fs.find(BUCKET) == everything
    assert fs.find(f"{BUCKET}/b", maxdepth=1) == [f"{BUCKET}/b/d1", f"{BUCKET}/b/d2",
                                                   f"{BUCKET}/b/d3"]
    assert fs.glob(f"{BUCKET}/b/d*") == [f"{BUCKET}/b/d1", f"{BUCKET}/b/d2", f"{BUCKET}/b/d3"]
    assert fs.du(BUCKET) == 12 * MIB + 5 + 1 + 1 + 2 + 3
    assert fs.isdir(f"{BUCKET}/b/c") and fs.isfile(f"{BUCKET}/b/c/two")
    assert not fs.exists(f"{BUCKET}/nope") and not fs.exists(f"{BUCKET}/a/one")

    fs.copy(f"{BUCKET}/a/big.bin", f"{BUCKET}/copy.bin")  # server-side CopyObject
    assert fs.cat(f"{BUCKET}/copy.bin") == big
    fs.mv(f"{BUCKET}/a/one.txt", f"{BUCKET}/moved.txt")
    assert not fs.exists(f"{BUCKET}/a/one.txt") and fs.cat(f"{BUCKET}/moved.txt") == b"hello"
    fs.touch(f"{BUCKET}/empty")
    assert fs.cat(f"{BUCKET}/empty") == b"" and fs.size(f"{BUCKET}/empty") == 0
    fs.setxattr(f"{BUCKET}/moved.txt", color="blue")
    assert fs.getxattr(f"{BUCKET}/moved.txt", "color") == "blue"

    fs.rm(f"{BUCKET}/b", recursive=True)
    fs.rm(f"{BUCKET}/copy.bin")
    assert fs.find(BUCKET) == [f"{BUCKET}/a/big.bin", f"{BUCKET}/empty", f"{BUCKET}/moved.txt"]
    fs.rm(BUCKET, recursive=True)  # empties and deletes the bucket
    fs.invalidate_cache()
    assert BUCKET not in fs.ls("")
