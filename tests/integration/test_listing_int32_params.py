"""A listing's count and marker parameters are int32s to S3: max-keys, max-uploads,
max-parts and part-number-marker past 2147483647 are 400 InvalidArgument "Provided NAME not
an integer or within integer range" (S3's answer for max-uploads=2157483647), not a page of
1,000. One parser (`gateway.s3.http.count_param`) reads all four."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.buckets import fresh_bucket

TOO_BIG = 2**31


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    with fresh_bucket(s3, "int32") as name:
        yield name


def _refused(call: Callable[..., Any], name: str, **kw: Any) -> None:
    with pytest.raises(ClientError) as e:
        call(**kw)
    err = e.value.response["Error"]
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err["Code"] == "InvalidArgument"
    assert err["Message"] == f"Provided {name} not an integer or within integer range"
    assert err["ArgumentName"] == name and err["ArgumentValue"] == str(TOO_BIG)


def test_past_int32_is_refused(s3: Any, bucket: str) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=b"x")
    _refused(s3.list_objects_v2, "max-keys", Bucket=bucket, MaxKeys=TOO_BIG)
    _refused(s3.list_object_versions, "max-keys", Bucket=bucket, MaxKeys=TOO_BIG)
    _refused(s3.list_multipart_uploads, "max-uploads", Bucket=bucket, MaxUploads=TOO_BIG)
    _refused(s3.list_parts, "max-parts", Bucket=bucket, Key="k", UploadId=uid,
             MaxParts=TOO_BIG)
    _refused(s3.list_parts, "part-number-marker", Bucket=bucket, Key="k", UploadId=uid,
             PartNumberMarker=TOO_BIG)
    # the largest int32 is a page of at most 1,000, as before
    assert s3.list_objects_v2(Bucket=bucket, MaxKeys=TOO_BIG - 1)["MaxKeys"] == 1000
    parts = s3.list_parts(Bucket=bucket, Key="k", UploadId=uid, MaxParts=TOO_BIG - 1)
    assert [p["PartNumber"] for p in parts["Parts"]] == [1]


def test_negative_counts_have_s3s_messages(s3: Any, bucket: str) -> None:
    """A negative max-keys is 400 InvalidArgument "Argument maxKeys must be an integer
    between 0 and 2147483647" (S3 names it maxKeys there; MinIO's and fake-s3's AWS-copied
    texts); max-uploads and max-parts keep their own names. The gateway said "Argument
    max-keys ..."."""
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    for call, name, kw in ((s3.list_objects, "maxKeys", {"MaxKeys": -1}),
                           (s3.list_objects_v2, "maxKeys", {"MaxKeys": -1}),
                           (s3.list_object_versions, "maxKeys", {"MaxKeys": -1}),
                           (s3.list_multipart_uploads, "max-uploads", {"MaxUploads": -1}),
                           (s3.list_parts, "max-parts", {"Key": "k", "UploadId": uid,
                                                         "MaxParts": -1})):
        with pytest.raises(ClientError) as e:
            call(Bucket=bucket, **kw)
        err = e.value.response["Error"]
        assert (e.value.response["ResponseMetadata"]["HTTPStatusCode"], err["Code"]) == (
            400, "InvalidArgument")
        assert err["Message"] == f"Argument {name} must be an integer between 0 and 2147483647"
        assert (err["ArgumentName"], err["ArgumentValue"]) == (name, "-1")
