"""A PutObject or UploadPart sent with `Transfer-Encoding: chunked` (a body of unknown
length: curl's `-T -`, a JS SDK v3 stream without a length) is 501 NotImplemented "A header
you provided implies functionality that is not implemented" naming the header, as S3
answers it (<Header>Transfer-Encoding</Header>, seen by knox#43, awssum#30, iRODS's S3
plugin against AWS), nothing stored. The gateway stored such a body (up to its size cap).
Clients that know a body's length send Content-Length (aws-chunked uploads too), so the
clients named in the README never send it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.buckets import fresh_bucket


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    with fresh_bucket(s3, "te-chunked") as name:
        yield name


def _curl_chunked(url: str, body: bytes) -> tuple[bytes, bytes]:
    """Status and body of curl's answer to an upload of `body` from a pipe (chunked)."""
    out = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-T", "-", url],
                         input=body, capture_output=True, timeout=120, check=True)
    answer, _, status = out.stdout.rpartition(b"\n")
    return status, answer


def test_chunked_put_and_part_are_not_implemented(s3: Any, bucket: str) -> None:
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"})
    status, answer = _curl_chunked(url, b"o" * 100_000)
    assert status == b"501", answer
    assert b"<Code>NotImplemented</Code>" in answer
    assert (b"<Message>A header you provided implies functionality that is not "
            b"implemented</Message>") in answer
    assert b"<Header>Transfer-Encoding</Header>" in answer
    uid = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    url = s3.generate_presigned_url("upload_part", Params={
        "Bucket": bucket, "Key": "m", "UploadId": uid, "PartNumber": 1})
    status, answer = _curl_chunked(url, b"p" * 100)
    assert status == b"501" and b"<Header>Transfer-Encoding</Header>" in answer, answer
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert "Parts" not in s3.list_parts(Bucket=bucket, Key="m", UploadId=uid)
    s3.abort_multipart_upload(Bucket=bucket, Key="m", UploadId=uid)
    # the same bodies with their length are taken (the server serves on)
    s3.put_object(Bucket=bucket, Key="k", Body=b"o" * 100_000)
    assert s3.get_object(Bucket=bucket, Key="k")["ContentLength"] == 100_000
