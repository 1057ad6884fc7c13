"""SSE-C multipart uploads: the customer key wraps the upload's data key."""

from __future__ import annotations

import os
import random

import pytest
from botocore.exceptions import ClientError

MiB = 1024 * 1024


def _status(e: ClientError) -> tuple[int, str]:
    return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]


def test_sse_c_multipart_roundtrip(cluster) -> None:
    s3 = cluster.client()
    s3.create_bucket(Bucket="ssec-mpu")
    key, other = os.urandom(32), os.urandom(32)
    ssec = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    rng = random.Random(11)
    parts_data = [rng.randbytes(5 * MiB), rng.randbytes(MiB + 3)]
    up = s3.create_multipart_upload(Bucket="ssec-mpu", Key="obj", **ssec)
    assert up["SSECustomerAlgorithm"] == "AES256"
    uid = up["UploadId"]
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket="ssec-mpu", Key="obj", UploadId=uid, PartNumber=1,
                       Body=parts_data[0])
    assert _status(e.value) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket="ssec-mpu", Key="obj", UploadId=uid, PartNumber=1,
                       Body=parts_data[0], SSECustomerAlgorithm="AES256", SSECustomerKey=other)
    assert _status(e.value) == (400, "InvalidRequest")  # AWS: parameters did not match
    etags = []
    for n, data in enumerate(parts_data, start=1):
        r = s3.upload_part(Bucket="ssec-mpu", Key="obj", UploadId=uid, PartNumber=n,
                           Body=data, **ssec)
        etags.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(Bucket="ssec-mpu", Key="obj", UploadId=uid,
                                 MultipartUpload={"Parts": etags}, **ssec)
    got = s3.get_object(Bucket="ssec-mpu", Key="obj", **ssec)["Body"].read()
    assert got == b"".join(parts_data)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="ssec-mpu", Key="obj")
    assert _status(e.value) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="ssec-mpu", Key="obj", SSECustomerAlgorithm="AES256",
                      SSECustomerKey=other)
    assert _status(e.value)[0] == 403


def _ssec_upload(s3, bucket: str, ssec: dict, **create) -> dict:
    """An SSE-C upload of one part, ready to complete (its CompleteMultipartUpload kwargs)."""
    uid = s3.create_multipart_upload(Bucket=bucket, Key="obj", **ssec, **create)["UploadId"]
    alg = create.get("ChecksumAlgorithm")
    extra = {"ChecksumAlgorithm": alg} if alg else {}
    res = s3.upload_part(Bucket=bucket, Key="obj", UploadId=uid, PartNumber=1,
                         Body=b"only part", **ssec, **extra)
    part = {"PartNumber": 1, "ETag": res["ETag"]}
    if alg:
        part[f"Checksum{alg}"] = res[f"Checksum{alg}"]
    return {"Bucket": bucket, "Key": "obj", "UploadId": uid,
            "MultipartUpload": {"Parts": [part]}}


def test_completion_asks_the_sse_c_key_only_of_a_checksum_upload(cluster) -> None:
    """AWS needs the SSE-C key at completion only for an upload made with a checksum
    algorithm: without one, a completion without the key succeeds (Debian's aws CLI 2.9 never
    sends it), and a key that is sent must be the upload's; a repeat answers the same."""
    s3 = cluster.client()
    s3.create_bucket(Bucket="ssec-mpu-nokey")
    key, other = os.urandom(32), os.urandom(32)
    ssec = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    wrong = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": other}
    done = _ssec_upload(s3, "ssec-mpu-nokey", ssec)
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(**done, **wrong)
    assert _status(e.value) == (400, "InvalidRequest")
    first = s3.complete_multipart_upload(**done)
    assert s3.complete_multipart_upload(**done)["ETag"] == first["ETag"]  # a repeat, as AWS
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(**done, **wrong)
    assert _status(e.value) == (400, "InvalidRequest")
    got = s3.get_object(Bucket="ssec-mpu-nokey", Key="obj", **ssec)["Body"].read()
    assert got == b"only part"
    # With a checksum algorithm the key stays required, first time and on a repeat.
    done = _ssec_upload(s3, "ssec-mpu-nokey", ssec, ChecksumAlgorithm="CRC32")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(**done)
    assert _status(e.value) == (400, "InvalidRequest")
    s3.complete_multipart_upload(**done, **ssec)
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(**done)
    assert _status(e.value) == (400, "InvalidRequest") and "ETag" not in e.value.response


@pytest.mark.parametrize("alg", ["SHA256", "CRC64NVME"])
def test_repeated_completion_checks_the_sse_c_key(cluster, alg: str) -> None:
    """A repeated CompleteMultipartUpload of an SSE-C upload made with a checksum algorithm
    (answered 200 with the object it made) needs the upload's key like the first: without it
    400, with another 400, and no answer describes the object to a caller without the key.
    CRC64NVME too, though an upload made without an algorithm gets S3's default CRC64NVME
    (whose repeat needs no key)."""
    s3 = cluster.client()
    bucket = f"ssec-mpu-again-{alg.lower()}"
    s3.create_bucket(Bucket=bucket)
    key, other = os.urandom(32), os.urandom(32)
    ssec = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    done = _ssec_upload(s3, bucket, ssec, ChecksumAlgorithm=alg)
    first = s3.complete_multipart_upload(**done, **ssec)
    for wrong in ({}, {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": other}):
        with pytest.raises(ClientError) as e:
            s3.complete_multipart_upload(**done, **wrong)
        assert _status(e.value) == (400, "InvalidRequest"), wrong
        assert "ETag" not in e.value.response
    again = s3.complete_multipart_upload(**done, **ssec)
    assert again["ETag"] == first["ETag"]
    got = s3.get_object(Bucket=bucket, Key="obj", **ssec)["Body"].read()
    assert got == b"only part"
