"""S3's default CRC64NVME of an SSE-C upload made without a checksum algorithm is a digest
of the plaintext: a caller without the customer key must not be told it (AWS asks ListParts
and CompleteMultipartUpload for the key whenever there is a checksum to show; no answer here
describes an SSE-C object to a caller without its key). Review 16a."""

from __future__ import annotations

import base64
import os
import uuid

from awscrt import checksums as crt

from tests.integration.cluster import LocalCluster


def _crc64nvme(data: bytes) -> str:
    return base64.b64encode(crt.crc64nvme(data).to_bytes(8, "big")).decode()


def _upload(cluster: LocalCluster) -> tuple[object, dict, bytes]:
    s3 = cluster.client(request_checksum_calculation="when_required")
    bucket = f"ssec-default-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    ssec = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": os.urandom(32)}
    secret = b"PIN=4711"
    uid = s3.create_multipart_upload(Bucket=bucket, Key="obj", **ssec)["UploadId"]
    res = s3.upload_part(Bucket=bucket, Key="obj", UploadId=uid, PartNumber=1, Body=secret,
                         **ssec)
    done = {"Bucket": bucket, "Key": "obj", "UploadId": uid,
            "MultipartUpload": {"Parts": [{"PartNumber": 1, "ETag": res["ETag"]}]}}
    return s3, done, secret


def test_list_parts_without_the_key_shows_no_plaintext_checksum(cluster: LocalCluster) -> None:
    s3, done, secret = _upload(cluster)
    parts = s3.list_parts(Bucket=done["Bucket"], Key="obj", UploadId=done["UploadId"])["Parts"]
    assert _crc64nvme(secret) not in {p.get("ChecksumCRC64NVME") for p in parts}


def test_completion_without_the_key_shows_no_plaintext_checksum(cluster: LocalCluster) -> None:
    s3, done, secret = _upload(cluster)
    answer = s3.complete_multipart_upload(**done)  # no key: allowed for such an upload
    assert answer.get("ChecksumCRC64NVME") != _crc64nvme(secret)


def test_completion_without_the_key_is_no_checksum_oracle(cluster: LocalCluster) -> None:
    """A completion without the key that asserts a checksum of the plaintext must not be
    told whether it is right (a wrong guess is BadDigest and leaves the upload open; the
    right one must not then succeed, or guesses are confirmed one by one): the key is asked
    for, as AWS asks for it when there is a checksum."""
    import pytest
    from botocore.exceptions import ClientError

    s3, done, secret = _upload(cluster)
    with pytest.raises(ClientError):
        s3.complete_multipart_upload(**done, ChecksumCRC64NVME=_crc64nvme(b"PIN=0000"),
                                     ChecksumType="FULL_OBJECT")
    with pytest.raises(ClientError):
        s3.complete_multipart_upload(**done, ChecksumCRC64NVME=_crc64nvme(secret),
                                     ChecksumType="FULL_OBJECT")
