"""A PutObject or UploadPart whose plain body comes in `Transfer-Encoding: chunked` (its
length unknown: curl's `-T -`, a JS SDK v3 stream without a length) is 501 NotImplemented "A
header you provided implies functionality that is not implemented" naming the header, as S3
answers it (<Header>Transfer-Encoding</Header>, seen by knox#43, awssum#30, iRODS's S3 plugin
against AWS in 2026), nothing stored. The gateway stored such a body (up to its size cap). An
aws-chunked body may come in a transfer coding (S3's SigV4 streaming documentation: then
without Content-Length, its length in x-amz-decoded-content-length, as botocore, the AWS CLI
and the JS and C++ SDKs send a stream): that is taken, as before."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

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


def test_a_signed_plain_body_in_a_transfer_coding_is_not_implemented(
        cluster: Any, bucket: str) -> None:
    """boto3 over plain HTTP signs a plain body (x-amz-content-sha256 its hash, no
    aws-chunked); sent in chunked transfer coding (s3-tests'
    test_object_write_with_chunked_transfer_encoding adds the header) it is refused like
    curl's. aws-chunked in a transfer coding is taken: the JS SDK's streams
    (test_clients_js.py, checksums) and test_direct_body.py's dripping body send it."""
    s3 = cluster.client()

    def chunked(request: Any, **_: Any) -> None:
        request.headers.add_header("Transfer-Encoding", "chunked")

    s3.meta.events.register_first("before-sign.s3.PutObject", chunked)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="te", Body=b"bar")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert e.value.response["Error"]["Code"] == "NotImplemented"
    assert cluster.client().list_objects_v2(Bucket=bucket)["KeyCount"] == 0
