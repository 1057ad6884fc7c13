"""GetObjectAttributes' ObjectParts of a multipart object lists its parts (paged, each with
its checksum) only when the object's checksum is COMPOSITE; of a FULL_OBJECT object (one made
with CRC32/CRC32C/CRC64NVME FULL_OBJECT, or without an algorithm: S3's default CRC64NVME) it
has the part count alone. AWS documents no Part "if an additional checksum isn't applied",
and LocalStack's AWS-validated GetObjectAttributes answers a FULL_OBJECT object
`ObjectParts: {TotalPartsCount}` only. The gateway listed the parts of every multipart
object, with MaxParts, markers and IsTruncated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.buckets import fresh_bucket

PART = 5 * 1024 * 1024


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    with fresh_bucket(s3, "attr-parts") as name:
        yield name


def _made(s3: Any, bucket: str, key: str, **create: str) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    alg = create.get("ChecksumAlgorithm", "CRC32")
    parts = []
    for n, body in ((1, b"a" * PART), (2, b"b" * PART), (3, b"tail")):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=body,
                           ChecksumAlgorithm=alg)
        parts.append({"PartNumber": n, "ETag": r["ETag"], f"Checksum{alg}": r[f"Checksum{alg}"]})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                 MultipartUpload={"Parts": parts})


@pytest.mark.parametrize("create", [
    {"ChecksumAlgorithm": "CRC32", "ChecksumType": "FULL_OBJECT"},
    {"ChecksumAlgorithm": "CRC64NVME"},
    {},
])
def test_full_object_parts_are_counted_not_listed(s3: Any, bucket: str,
                                                  create: dict[str, str]) -> None:
    _made(s3, bucket, "k", **create)
    got = s3.get_object_attributes(Bucket=bucket, Key="k", MaxParts=1,
                                   ObjectAttributes=["Checksum", "ObjectParts", "ObjectSize"])
    assert got["Checksum"]["ChecksumType"] == "FULL_OBJECT"
    assert got["ObjectParts"] == {"TotalPartsCount": 3}
    assert got["ObjectSize"] == 2 * PART + 4


def test_composite_parts_are_listed(s3: Any, bucket: str) -> None:
    _made(s3, bucket, "k", ChecksumAlgorithm="SHA256")
    got = s3.get_object_attributes(Bucket=bucket, Key="k", MaxParts=2,
                                   ObjectAttributes=["ObjectParts"])["ObjectParts"]
    assert (got["TotalPartsCount"], got["MaxParts"], got["IsTruncated"],
            got["NextPartNumberMarker"]) == (3, 2, True, 2)
    assert [(p["PartNumber"], p["Size"], bool(p["ChecksumSHA256"]))
            for p in got["Parts"]] == [(1, PART, True), (2, PART, True)]
