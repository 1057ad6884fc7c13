"""GET/HEAD ?partNumber=N of a multipart object whose part N is empty (S3 takes an empty last
part) answers that part's bytes: none. The gateway answered 200 with the whole object (and,
with checksum mode, the empty part's checksum over it, which botocore then refused as a
mismatch). Other parts are still their 206 byte ranges."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.buckets import fresh_bucket

PART = 5 * 1024 * 1024


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    with fresh_bucket(s3, "empty-part") as name:
        yield name


def test_an_empty_last_part_is_read_as_empty(s3: Any, bucket: str) -> None:
    first = b"f" * PART
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="k", UploadId=uid,
                                                      PartNumber=n, Body=body)["ETag"]}
             for n, body in ((1, first), (2, b""))]
    s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid,
                                 MultipartUpload={"Parts": parts})
    got = s3.get_object(Bucket=bucket, Key="k", PartNumber=2, ChecksumMode="ENABLED")
    assert got["Body"].read() == b""  # botocore checks the part's checksum against it too
    assert got["ContentLength"] == 0 and got["PartsCount"] == 2
    assert "ContentRange" not in got
    head = s3.head_object(Bucket=bucket, Key="k", PartNumber=2)
    assert head["ContentLength"] == 0 and head["PartsCount"] == 2
    one = s3.get_object(Bucket=bucket, Key="k", PartNumber=1)
    assert one["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert one["ContentRange"] == f"bytes 0-{PART - 1}/{PART}"
    assert one["Body"].read() == first
    assert s3.head_object(Bucket=bucket, Key="k", PartNumber=1)["ContentLength"] == PART


def test_an_empty_object_part_one(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="e", Body=b"")
    got = s3.get_object(Bucket=bucket, Key="e", PartNumber=1)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200 and got["Body"].read() == b""
    assert s3.head_object(Bucket=bucket, Key="e", PartNumber=1)["ContentLength"] == 0
