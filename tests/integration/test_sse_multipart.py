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


def test_repeated_completion_checks_the_sse_c_key(cluster) -> None:
    """A repeated CompleteMultipartUpload of an SSE-C upload (answered 200 with the object
    it made) needs the upload's key like the first: without it 400, with another 400, and
    no answer describes the object to a caller without the key."""
    s3 = cluster.client()
    s3.create_bucket(Bucket="ssec-mpu-again")
    key, other = os.urandom(32), os.urandom(32)
    ssec = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    uid = s3.create_multipart_upload(Bucket="ssec-mpu-again", Key="obj", **ssec)["UploadId"]
    etag = s3.upload_part(Bucket="ssec-mpu-again", Key="obj", UploadId=uid, PartNumber=1,
                          Body=b"only part", **ssec)["ETag"]
    done = {"Bucket": "ssec-mpu-again", "Key": "obj", "UploadId": uid,
            "MultipartUpload": {"Parts": [{"PartNumber": 1, "ETag": etag}]}}
    first = s3.complete_multipart_upload(**done, **ssec)
    for wrong in ({}, {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": other}):
        with pytest.raises(ClientError) as e:
            s3.complete_multipart_upload(**done, **wrong)
        assert _status(e.value) == (400, "InvalidRequest"), wrong
        assert "ETag" not in e.value.response
    again = s3.complete_multipart_upload(**done, **ssec)
    assert again["ETag"] == first["ETag"]
    got = s3.get_object(Bucket="ssec-mpu-again", Key="obj", **ssec)["Body"].read()
    assert got == b"only part"
