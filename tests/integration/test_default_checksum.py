"""S3's default checksum: since its 2025 data integrity protections S3 stores a CRC64NVME
(FULL_OBJECT) for every object written without a checksum, single PUTs, POST forms,
copies and multipart uploads made without an algorithm alike (the part's and the object's
ChecksumCRC64NVME "is present if ... the object was uploaded without a checksum (and Amazon
S3 added the default checksum, CRC64NVME)", API reference). Clients here send no checksum
(boto3 with request_checksum_calculation=when_required, as older SDKs, rclone and s3cmd)."""

from __future__ import annotations

import base64
import random
import uuid
from typing import Any

import pytest
import requests
from awscrt import checksums as crt
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster

MiB = 1024 * 1024


def crc64nvme(data: bytes) -> str:
    return base64.b64encode(crt.crc64nvme(data).to_bytes(8, "big")).decode()


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    s3 = cluster.client(request_checksum_calculation="when_required")
    bucket = f"default-crc-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    return {"s3": s3, "bucket": bucket, "cluster": cluster}


def _stored(s3: Any, bucket: str, key: str) -> tuple[str | None, str | None, Any]:
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    attrs = s3.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=["Checksum"])
    return head.get("ChecksumCRC64NVME"), head.get("ChecksumType"), attrs.get("Checksum")


def test_put_without_checksum_gets_crc64nvme(w: dict[str, Any]) -> None:
    """A PUT with no checksum stored none (HEAD with checksum mode, GetObjectAttributes and
    the PUT's answer showed nothing): S3 answers and keeps its default CRC64NVME."""
    s3, b = w["s3"], w["bucket"]
    body = random.Random(3).randbytes(300_000)
    put = s3.put_object(Bucket=b, Key="single", Body=body)
    assert put.get("ChecksumCRC64NVME") == crc64nvme(body)
    assert put.get("ChecksumType") == "FULL_OBJECT"
    want = crc64nvme(body)
    assert _stored(s3, b, "single") == (want, "FULL_OBJECT", {
        "ChecksumCRC64NVME": want, "ChecksumType": "FULL_OBJECT"})
    listed = s3.list_objects_v2(Bucket=b, Prefix="single")["Contents"][0]
    assert listed["ChecksumAlgorithm"] == ["CRC64NVME"]


def test_copy_and_post_without_checksum_get_crc64nvme(w: dict[str, Any]) -> None:
    s3, b = w["s3"], w["bucket"]
    body = b"posted body"
    form = s3.generate_presigned_post(b, "posted")
    r = requests.post(form["url"], data=form["fields"], files={"file": ("f", body)},
                      timeout=60)
    assert r.status_code == 204, r.text
    assert _stored(s3, b, "posted")[:2] == (crc64nvme(body), "FULL_OBJECT")
    copied = s3.copy_object(Bucket=b, Key="copied", CopySource={"Bucket": b, "Key": "posted"})
    assert copied["CopyObjectResult"].get("ChecksumCRC64NVME") == crc64nvme(body)
    assert _stored(s3, b, "copied")[:2] == (crc64nvme(body), "FULL_OBJECT")


def test_multipart_without_algorithm_gets_full_object_crc64nvme(w: dict[str, Any]) -> None:
    """An upload made without an algorithm: its completion with x-amz-checksum-type
    FULL_OBJECT was 400 BadDigest, and one carrying the object's true CRC64NVME too (there
    was no checksum to compare). Now each part has its CRC64NVME, the object the parts'
    combined (the CRC of the whole object), a completion may assert it, and a wrong one is
    still BadDigest."""
    s3, b, key = w["s3"], w["bucket"], "multi"
    rnd = random.Random(4)
    chunks = [rnd.randbytes(5 * MiB), rnd.randbytes(1000)]
    up = s3.create_multipart_upload(Bucket=b, Key=key)["UploadId"]
    parts = []
    for n, chunk in enumerate(chunks, 1):
        p = s3.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=n, Body=chunk)
        assert p.get("ChecksumCRC64NVME") == crc64nvme(chunk)
        parts.append({"PartNumber": n, "ETag": p["ETag"]})
    whole = crc64nvme(b"".join(chunks))

    def complete(**kw: Any) -> Any:
        return s3.complete_multipart_upload(Bucket=b, Key=key, UploadId=up,
                                            MultipartUpload={"Parts": parts}, **kw)

    with pytest.raises(ClientError) as exc:
        complete(ChecksumCRC64NVME=crc64nvme(b"other"), ChecksumType="FULL_OBJECT")
    assert exc.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(ClientError) as exc:
        complete(ChecksumType="COMPOSITE")
    assert exc.value.response["Error"]["Code"] == "BadDigest"
    done = complete(ChecksumCRC64NVME=whole, ChecksumType="FULL_OBJECT")
    assert done["ChecksumCRC64NVME"] == whole and done["ChecksumType"] == "FULL_OBJECT"
    assert _stored(s3, b, key)[:2] == (whole, "FULL_OBJECT")
    got = s3.get_object(Bucket=b, Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(chunks)
