"""A PutObject or UploadPart body in plain HTTP chunked transfer coding (no Content-Length,
no aws-chunked framing: what curl -T - and boto3's stream of unknown length over HTTP send)
is de-chunked and stored exactly, as the README says since the 501 of session 19 was
reverted (Ceph RGW and MinIO take it; s3-tests test_object_write_with_chunked_transfer_encoding).
Only its refusal over the cap was tested (test_limits_chunked.py); this pins the bytes."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.buckets import fresh_bucket

PART = 5 * 1024 * 1024


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    with fresh_bucket(s3, "te-chunked") as name:
        yield name


def _curl_put(url: str, body: bytes) -> tuple[int, bytes]:
    """`curl -T -`: the body from stdin, sent in chunked transfer coding."""
    out = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null", "-w", "%{http_code}",
                          "-T", "-", url], input=body, capture_output=True, timeout=120,
                         check=True)
    return int(out.stdout[-3:]), out.stdout


def test_plain_chunked_put_object_is_stored_exactly(s3: Any, bucket: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"})
    status, head = _curl_put(url, data)
    assert status == 200, head
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["ContentLength"] == len(data) and got["Body"].read() == data
    assert got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'


def test_plain_chunked_upload_parts_are_stored_exactly(s3: Any, bucket: str) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    bodies = [os.urandom(PART), os.urandom(1234)]
    parts = []
    for n, body in enumerate(bodies, 1):
        url = s3.generate_presigned_url("upload_part", Params={
            "Bucket": bucket, "Key": "m", "UploadId": uid, "PartNumber": n})
        status, head = _curl_put(url, body)
        assert status == 200, head
        etag = next(line.split(b":", 1)[1].strip().decode() for line in head.splitlines()
                    if line.lower().startswith(b"etag:"))
        assert etag == f'"{hashlib.md5(body).hexdigest()}"'
        parts.append({"PartNumber": n, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=uid,
                                 MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="m")["Body"].read() == b"".join(bodies)
