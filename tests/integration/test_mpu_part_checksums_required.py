"""CompleteMultipartUpload of an upload made with a checksum algorithm (COMPOSITE) must list
each part's checksum of that algorithm: S3 answers 400 InvalidRequest "The upload was
created using a crc32 checksum. The complete request must include the checksum for each
part. It was missing for part N in the request." and the upload stays open. The gateway
completed such an upload without them (the composite checksum then stood on part checksums
the client never confirmed). A FULL_OBJECT upload, and one made without an algorithm, still
complete without part checksums."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.buckets import fresh_bucket

PART = 5 * 1024 * 1024


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    with fresh_bucket(s3, "part-cks") as name:
        yield name


def _upload(s3: Any, bucket: str, key: str, alg: str | None, ctype: str | None,
            ) -> tuple[str, list[dict[str, Any]]]:
    kw = {"ChecksumAlgorithm": alg} if alg else {}
    if ctype:
        kw["ChecksumType"] = ctype
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key, **kw)["UploadId"]
    parts = []
    for n, body in ((1, b"a" * PART), (2, b"tail")):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=body,
                           ChecksumAlgorithm=alg or "CRC32")
        parts.append({"PartNumber": n, "ETag": r["ETag"],
                      f"Checksum{alg or 'CRC32'}": r[f"Checksum{alg or 'CRC32'}"]})
    return uid, parts


@pytest.mark.parametrize("alg", ["CRC32", "CRC32C", "SHA1", "SHA256"])
def test_composite_completion_needs_every_part_checksum(s3: Any, bucket: str, alg: str) -> None:
    uid, parts = _upload(s3, bucket, "k", alg, "COMPOSITE")
    without_second = [parts[0], {"PartNumber": 2, "ETag": parts[1]["ETag"]}]
    for listed, missing in (([{"PartNumber": p["PartNumber"], "ETag": p["ETag"]}
                              for p in parts], 1), (without_second, 2)):
        with pytest.raises(ClientError) as e:
            s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid,
                                         MultipartUpload={"Parts": listed})
        err = e.value.response
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert err["Error"]["Code"] == "InvalidRequest"
        assert err["Error"]["Message"] == (
            f"The upload was created using a {alg.lower()} checksum. The complete request "
            "must include the checksum for each part. It was missing for part "
            f"{missing} in the request.")
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="k",
                                                   UploadId=uid)["Parts"]] == [1, 2]
    r = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid,
                                     MultipartUpload={"Parts": parts})
    assert r[f"Checksum{alg}"].endswith("-2") and r["ChecksumType"] == "COMPOSITE"


@pytest.mark.parametrize(("alg", "ctype"), [("CRC32", "FULL_OBJECT"), (None, None)])
def test_other_uploads_complete_without_part_checksums(s3: Any, bucket: str, alg: str | None,
                                                       ctype: str | None) -> None:
    uid, parts = _upload(s3, bucket, "k", alg, ctype)
    r = s3.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]}
                                   for p in parts]})
    assert r["ChecksumType"] == "FULL_OBJECT"
    assert s3.head_object(Bucket=bucket, Key="k")["ContentLength"] == PART + 4
