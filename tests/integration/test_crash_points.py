"""A real gateway killed (SIGKILL, by the `TESSERA_TEST_DIE_AT` hook of
storage/testing/crash_points.py) at the two points of a PUT that matter: with the version's
shards written and its commit not sent, the PUT never happened (no key, no listing entry,
its shards swept as orphans); with the commit applied and no answer given, it happened
whole (every byte reads back). The same after-commit kill for CompleteMultipartUpload (the
client's retry is answered 200 with the object's ETag) and CopyObject. `tessera fsck` finds nothing wrong after either, and names
the first one's shards as orphans until the sweep collects them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from storage.testing.crash_points import ENV
from tests.integration.cluster import LocalCluster, wait_for
from tests.integration.test_archive_chaos import Chaos

BODY = bytes(range(256)) * 1200  # 300 KiB: erasure-coded, one stripe


def fsck(c: LocalCluster) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "ops.cli", "fsck", "--config",
                          str(c.data / "tessera.toml"), "--json"],
                         capture_output=True, text=True, timeout=300)
    report = json.loads(out.stdout)
    assert out.returncode == (1 if report["errors"] else 0), out.stderr
    return report


@pytest.fixture
def chaos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Chaos]:
    monkeypatch.setenv("TESSERA_ORPHAN_GRACE_S", "10")
    monkeypatch.setenv("TESSERA_REPAIR_SWEEP_S", "0.5")
    # one worker in the gateways restart_gateway starts too (`python -m gateway` has one per
    # core): else a CompleteMultipartUpload retried on the worker still alive answers 200
    monkeypatch.setenv("TESSERA_GATEWAY_WORKERS", "1")
    monkeypatch.setenv(ENV, "before-commit:crash/")
    ch = Chaos(LocalCluster(tmp_path / "data", up_args=["--workers", "1"]).start())
    try:
        yield ch
    finally:
        ch.close()


def test_a_put_killed_before_or_after_its_commit_is_none_or_all(
        chaos: Chaos, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = chaos.s3
    s3.create_bucket(Bucket="crashes")
    s3.put_object(Bucket="crashes", Key="kept", Body=BODY)
    with pytest.raises((BotoCoreError, ClientError)):
        s3.put_object(Bucket="crashes", Key="crash/before", Body=BODY)
    monkeypatch.setenv(ENV, "after-commit:crash/")
    chaos.restart_gateway()
    with pytest.raises((BotoCoreError, ClientError)):
        s3.put_object(Bucket="crashes", Key="crash/after", Body=BODY[::-1])
    chaos.restart_gateway()
    # CompleteMultipartUpload killed after its commit: the client's retry is answered 200
    up = s3.create_multipart_upload(Bucket="crashes", Key="crash/mpu")["UploadId"]
    etag = s3.upload_part(Bucket="crashes", Key="crash/mpu", UploadId=up, PartNumber=1,
                          Body=BODY)["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    with pytest.raises((BotoCoreError, ClientError)):
        s3.complete_multipart_upload(Bucket="crashes", Key="crash/mpu", UploadId=up,
                                     MultipartUpload=parts)
    chaos.restart_gateway()
    # CopyObject killed after its commit: the copy is whole
    with pytest.raises((BotoCoreError, ClientError)):
        s3.copy_object(Bucket="crashes", Key="crash/copy",
                       CopySource={"Bucket": "crashes", "Key": "kept"})
    monkeypatch.delenv(ENV)
    chaos.restart_gateway()
    done = s3.complete_multipart_upload(Bucket="crashes", Key="crash/mpu", UploadId=up,
                                        MultipartUpload=parts)
    assert s3.head_object(Bucket="crashes", Key="crash/mpu")["ETag"] == done["ETag"]
    assert s3.get_object(Bucket="crashes", Key="crash/mpu")["Body"].read() == BODY
    assert s3.get_object(Bucket="crashes", Key="crash/copy")["Body"].read() == BODY
    assert not s3.list_multipart_uploads(Bucket="crashes").get("Uploads")

    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="crashes")["Contents"]]
    assert listed == ["crash/after", "crash/copy", "crash/mpu", "kept"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="crashes", Key="crash/before")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"
    assert s3.get_object(Bucket="crashes", Key="crash/after")["Body"].read() == BODY[::-1]
    assert s3.get_object(Bucket="crashes", Key="kept")["Body"].read() == BODY

    first = fsck(chaos.c)
    assert first["errors"] == 0, first
    assert set(first["findings"]) <= {"orphan-shards"}, first
    # the orphan sweep collects the uncommitted write's shards; fsck then finds nothing
    wait_for(lambda: not fsck(chaos.c)["findings"], timeout=300,
             what="the killed write's shards swept")
