"""A listing asked for a page of zero entries (max-keys=0, max-uploads=0, max-parts=0, and
GetObjectAttributes' x-amz-max-parts: 0): an
empty page that is not truncated, as ListObjects answers it (and S3, per ceph/s3-tests'
test_bucket_list_maxkeys_zero). A truncated page must name where the next one starts; one
that is truncated without a NextKeyMarker (NextPartNumberMarker) sends a client that follows
IsTruncated back to the start of the listing forever."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.buckets import fresh_bucket


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    with fresh_bucket(s3, "zero-pages") as name:
        yield name


@pytest.mark.parametrize("versioning", [None, "Enabled", "Suspended"])
def test_list_object_versions_max_keys_zero(s3: Any, bucket: str,
                                             versioning: str | None) -> None:
    if versioning:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": versioning})
    for key in ("a", "b"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    r = s3.list_object_versions(Bucket=bucket, MaxKeys=0)
    assert r["IsTruncated"] is False
    assert "Versions" not in r and "DeleteMarkers" not in r and "NextKeyMarker" not in r
    assert r["MaxKeys"] == 0
    listed = s3.list_objects_v2(Bucket=bucket, MaxKeys=0)  # the answer it must agree with
    assert listed["IsTruncated"] is False


def test_list_multipart_uploads_max_uploads_zero(s3: Any, bucket: str) -> None:
    for key in ("a", "b/c"):
        s3.create_multipart_upload(Bucket=bucket, Key=key)
    for extra in ({}, {"Delimiter": "/"}):
        r = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=0, **extra)
        assert r["IsTruncated"] is False
        assert "Uploads" not in r and "CommonPrefixes" not in r and "NextKeyMarker" not in r
        assert r["MaxUploads"] == 0
    assert len(s3.list_multipart_uploads(Bucket=bucket)["Uploads"]) == 2


def test_list_parts_max_parts_zero(s3: Any, bucket: str) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    for n in (1, 2):
        s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=n, Body=b"p")
    r = s3.list_parts(Bucket=bucket, Key="k", UploadId=uid, MaxParts=0)
    assert r["IsTruncated"] is False
    assert "Parts" not in r
    assert r["MaxParts"] == 0
    with pytest.raises(s3.exceptions.NoSuchUpload):  # the upload is still looked up
        s3.list_parts(Bucket=bucket, Key="k", UploadId=uid + "x", MaxParts=0)


def test_object_attributes_max_parts_zero(s3: Any, bucket: str) -> None:
    # a COMPOSITE object: S3 pages the parts of no other (test_object_attributes_parts.py)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k",
                                     ChecksumAlgorithm="CRC32")["UploadId"]
    parts = []
    for n, body in ((1, b"p" * 5 * 1024 * 1024), (2, b"q")):
        r = s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=n, Body=body,
                           ChecksumAlgorithm="CRC32")
        parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid,
                                 MultipartUpload={"Parts": parts})
    got = s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["ObjectParts"],
                                   MaxParts=0)["ObjectParts"]
    assert got["IsTruncated"] is False
    assert "Parts" not in got and "NextPartNumberMarker" not in got
    assert got["TotalPartsCount"] == 2
    page = s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["ObjectParts"],
                                    MaxParts=1)["ObjectParts"]
    assert page["IsTruncated"] is True and page["NextPartNumberMarker"] == 1
