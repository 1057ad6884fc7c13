"""GET/HEAD ?partNumber=N with checksum mode: a COMPOSITE object's part has its own checksum
of the object's algorithm; a FULL_OBJECT object of several parts shows none for a part (S3's
answer, AWS-validated in localstack/localstack#12842), where the gateway answered the part's
CRC32 and CRC64NVME under x-amz-checksum-type FULL_OBJECT, a whole-object claim for a
part's digest; a one-part FULL_OBJECT object's part shows the object's checksum."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.buckets import fresh_bucket

PART = 5 * 1024 * 1024
CHECKSUMS = ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1",
             "ChecksumSHA256", "ChecksumType")


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    with fresh_bucket(s3, "part-get-cks") as name:
        yield name


def _object(s3: Any, bucket: str, key: str, bodies: list[bytes], **create: str,
            ) -> list[dict[str, Any]]:
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    alg = create.get("ChecksumAlgorithm", "CRC32")  # botocore's own for UploadPart
    parts = []
    for n, body in enumerate(bodies, 1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=body,
                           ChecksumAlgorithm=alg)
        parts.append({"PartNumber": n, "ETag": r["ETag"], f"Checksum{alg}": r[f"Checksum{alg}"]})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                 MultipartUpload={"Parts": parts})
    return parts


def _shown(r: dict[str, Any]) -> dict[str, str]:
    return {k: r[k] for k in CHECKSUMS if k in r}


@pytest.mark.parametrize("create", [{}, {"ChecksumAlgorithm": "CRC32",
                                         "ChecksumType": "FULL_OBJECT"}])
def test_full_object_parts_show_no_checksum(s3: Any, bucket: str, create: dict[str, str],
                                            ) -> None:
    _object(s3, bucket, "k", [b"a" * PART, b"tail"], **create)
    for n in (1, 2):
        got = s3.get_object(Bucket=bucket, Key="k", PartNumber=n, ChecksumMode="ENABLED")
        got["Body"].read()
        assert _shown(got) == {}, n
        head = s3.head_object(Bucket=bucket, Key="k", PartNumber=n, ChecksumMode="ENABLED")
        assert _shown(head) == {}, n
    whole = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert whole["ChecksumType"] == "FULL_OBJECT"


def test_one_part_full_object_shows_the_objects(s3: Any, bucket: str) -> None:
    _object(s3, bucket, "k", [b"only"])
    whole = _shown(s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED"))
    assert set(whole) == {"ChecksumCRC64NVME", "ChecksumType"}
    assert _shown(s3.head_object(Bucket=bucket, Key="k", PartNumber=1,
                                 ChecksumMode="ENABLED")) == whole


def test_composite_parts_show_their_own(s3: Any, bucket: str) -> None:
    parts = _object(s3, bucket, "k", [b"a" * PART, b"tail"], ChecksumAlgorithm="SHA256")
    for n in (1, 2):
        head = s3.head_object(Bucket=bucket, Key="k", PartNumber=n, ChecksumMode="ENABLED")
        assert _shown(head) == {"ChecksumSHA256": parts[n - 1]["ChecksumSHA256"],
                                "ChecksumType": "COMPOSITE"}
