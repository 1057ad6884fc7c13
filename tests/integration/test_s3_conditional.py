"""Conditional writes and deletes (If-Match / If-None-Match and the delete conditions), boto3."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError


def _err(call, *args, **kw) -> tuple[int, str]:
    with pytest.raises(ClientError) as e:
        call(*args, **kw)
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


def _mpu(s3, b: str, key: str, body: bytes = b"abc", **cond):
    up = s3.create_multipart_upload(Bucket=b, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=1, Body=body)["ETag"]
    return lambda: s3.complete_multipart_upload(
        Bucket=b, Key=key, UploadId=up, **cond,
        MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]})


@pytest.mark.parametrize("versioned", [False, True])
def test_put_if_match_and_if_none_match(s3, versioned: bool) -> None:
    b = f"cond-put-{int(versioned)}"
    s3.create_bucket(Bucket=b)
    if versioned:
        s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    # If-Match on a missing key: 404 NoSuchKey, whatever the value.
    assert _err(s3.put_object, Bucket=b, Key="k", IfMatch="*") == (404, "NoSuchKey")
    assert _err(s3.put_object, Bucket=b, Key="k", IfMatch='"bad"') == (404, "NoSuchKey")
    etag = s3.put_object(Bucket=b, Key="k", Body=b"1", IfNoneMatch="*")["ETag"]
    assert _err(s3.put_object, Bucket=b, Key="k", IfNoneMatch="*") == (412, "PreconditionFailed")
    # A write's If-None-Match takes only "*": any ETag is 501 NotImplemented, as on S3.
    assert _err(s3.put_object, Bucket=b, Key="k", IfNoneMatch=etag) == (501, "NotImplemented")
    assert _err(s3.put_object, Bucket=b, Key="k", Body=b"x", IfNoneMatch='"other"') == (
        501, "NotImplemented")
    assert _err(s3.copy_object, Bucket=b, Key="k2", CopySource={"Bucket": b, "Key": "k"},
                IfNoneMatch='"other"') == (501, "NotImplemented")
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"1"
    etag2 = s3.put_object(Bucket=b, Key="k", Body=b"2", IfMatch="*")["ETag"]
    assert _err(s3.put_object, Bucket=b, Key="k", IfMatch=etag) == (412, "PreconditionFailed")
    s3.put_object(Bucket=b, Key="k", Body=b"3", IfMatch=etag2)
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"3"
    s3.delete_object(Bucket=b, Key="k")  # a delete marker when versioned: still "missing"
    assert _err(s3.put_object, Bucket=b, Key="k", IfMatch="*") == (404, "NoSuchKey")
    s3.put_object(Bucket=b, Key="k", Body=b"4", IfNoneMatch="*")


def test_complete_multipart_conditions(s3) -> None:
    b = "cond-mpu"
    s3.create_bucket(Bucket=b)
    assert _err(_mpu(s3, b, "k", IfMatch="*")) == (404, "NoSuchKey")
    etag = _mpu(s3, b, "k", IfNoneMatch="*")()["ETag"]
    assert _err(_mpu(s3, b, "k", IfNoneMatch="*")) == (412, "PreconditionFailed")
    assert _err(_mpu(s3, b, "k", IfNoneMatch=etag)) == (501, "NotImplemented")
    assert _err(_mpu(s3, b, "k", IfMatch='"bad"')) == (412, "PreconditionFailed")
    _mpu(s3, b, "k", b"new", IfMatch=etag)()
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"new"
    # The failed completions left their uploads; DeleteBucket aborts them, as S3 does.
    assert s3.list_multipart_uploads(Bucket=b).get("Uploads")
    s3.delete_object(Bucket=b, Key="k")
    s3.delete_bucket(Bucket=b)
    assert _err(s3.head_bucket, Bucket=b)[0] == 404


def test_delete_if_match_and_directory_bucket_conditions(s3) -> None:
    b = "cond-del"
    s3.create_bucket(Bucket=b)
    etag = s3.put_object(Bucket=b, Key="k", Body=b"abc")["ETag"]
    mtime = s3.head_object(Bucket=b, Key="k")["LastModified"]
    assert _err(s3.delete_object, Bucket=b, Key="k", IfMatch='"bad"') == (412,
                                                                           "PreconditionFailed")
    # x-amz-if-match-size / -last-modified-time are evaluated in directory buckets only; a
    # general-purpose bucket refuses them, matching or not, and deletes nothing: 501
    # NotImplemented (measured against S3: ministack #1501; adobe/S3Mock).
    for cond in ({"IfMatchSize": 9}, {"IfMatchSize": 3}, {"IfMatchLastModifiedTime": mtime},
                 {"IfMatch": etag, "IfMatchSize": 3, "IfMatchLastModifiedTime": mtime}):
        assert _err(s3.delete_object, Bucket=b, Key="k", **cond) == (501, "NotImplemented")
    s3.head_object(Bucket=b, Key="k")  # still there
    s3.delete_object(Bucket=b, Key="k", IfMatch=etag)
    assert _err(s3.head_object, Bucket=b, Key="k")[0] == 404
    # A missing key: If-Match ("*" or an ETag) is 404 NoSuchKey, as S3 answers (LocalStack
    # #13894, ministack #1475, both measured against AWS).
    assert _err(s3.delete_object, Bucket=b, Key="k", IfMatch='"bad"') == (404, "NoSuchKey")
    assert _err(s3.delete_object, Bucket=b, Key="k", IfMatch="*") == (404, "NoSuchKey")
    assert _err(s3.delete_object, Bucket=b, Key="k", IfMatchSize=9) == (501, "NotImplemented")


def test_delete_conditions_versioned(s3) -> None:
    b = "cond-del-v"
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    r = s3.put_object(Bucket=b, Key="k", Body=b"x")
    etag, vid = r["ETag"], r["VersionId"]
    # If-Match on a delete by version id: 501 NotImplemented, "*" or an ETag, matching or
    # not (LocalStack #13894, measured against S3); the version stays.
    for im in ('"bad"', etag, "*"):
        assert _err(s3.delete_object, Bucket=b, Key="k", VersionId=vid,
                    IfMatch=im) == (501, "NotImplemented")
    assert s3.delete_object(Bucket=b, Key="k", IfMatch=etag)["DeleteMarker"] is True
    # The current record is a delete marker: no current object, so If-Match is 404
    # NoSuchKey (S3 does not look under the marker), "*" too, and nothing is added.
    assert _err(s3.delete_object, Bucket=b, Key="k", IfMatch='"bad"') == (404, "NoSuchKey")
    assert _err(s3.delete_object, Bucket=b, Key="k", IfMatch=etag) == (404, "NoSuchKey")
    assert _err(s3.delete_object, Bucket=b, Key="k", IfMatch="*") == (404, "NoSuchKey")
    assert len(s3.list_object_versions(Bucket=b)["DeleteMarkers"]) == 1
    s3.delete_object(Bucket=b, Key="k", VersionId=vid)
    assert [v["VersionId"] for v in s3.list_object_versions(Bucket=b).get("Versions", [])] == []


def test_delete_objects_per_object_conditions(s3) -> None:
    b = "cond-multi"
    s3.create_bucket(Bucket=b)
    e1 = s3.put_object(Bucket=b, Key="a", Body=b"1")["ETag"]
    s3.put_object(Bucket=b, Key="b", Body=b"22")
    mtime = s3.head_object(Bucket=b, Key="b")["LastModified"]
    # Size / LastModifiedTime (directory buckets only) and an ETag beside a VersionId refuse
    # the whole request, as DeleteObject refuses their headers: nothing is deleted.
    for entry in ({"Key": "b", "Size": 2}, {"Key": "b", "LastModifiedTime": mtime},
                  {"Key": "b", "VersionId": "null", "ETag": e1}):
        assert _err(s3.delete_objects, Bucket=b, Delete={"Objects": [
            {"Key": "a"}, entry]}) == (501, "NotImplemented")
    assert len(s3.list_objects_v2(Bucket=b)["Contents"]) == 2
    res = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "a", "ETag": '"bad"'}]})
    assert [(e["Key"], e["Code"]) for e in res["Errors"]] == [("a", "PreconditionFailed")]
    res = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "a", "ETag": e1},
                                                          {"Key": "b"}]})
    assert sorted(d["Key"] for d in res["Deleted"]) == ["a", "b"]
    assert "Contents" not in s3.list_objects_v2(Bucket=b)
    # Gone now: an ETag entry is that key's NoSuchKey error, as DeleteObject's 404.
    res = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "a", "ETag": e1}]})
    assert [(e["Key"], e["Code"]) for e in res["Errors"]] == [("a", "NoSuchKey")]


def test_conditional_races_have_one_winner(s3) -> None:
    """Eight concurrent `If-None-Match: *` PUTs of a new key, then eight concurrent
    `If-Match: <etag>` deletes in a versioned bucket: exactly one of each succeeds, since
    the condition is checked inside the metadata compare-and-swap."""
    from concurrent.futures import ThreadPoolExecutor

    b = "cond-race"
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})

    def status(call, **kw) -> int:  # type: ignore[no-untyped-def]
        try:
            return call(Bucket=b, Key="k", **kw)["ResponseMetadata"]["HTTPStatusCode"]
        except ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"]

    with ThreadPoolExecutor(8) as pool:
        puts = list(pool.map(lambda i: status(s3.put_object, Body=str(i).encode(),
                                              IfNoneMatch="*"), range(8)))
    assert sorted(puts) == [200] + [412] * 7
    etag = s3.head_object(Bucket=b, Key="k")["ETag"]
    with ThreadPoolExecutor(8) as pool:
        deletes = list(pool.map(lambda _: status(s3.delete_object, IfMatch=etag), range(8)))
    assert sorted(deletes) == [204] + [404] * 7  # the losers find the winner's marker
    assert len(s3.list_object_versions(Bucket=b)["DeleteMarkers"]) == 1


def test_write_with_if_match_and_if_none_match_is_501(s3) -> None:
    """Both conditions on one write: 501 NotImplemented naming both headers (as LocalStack's
    AWS-validated provider answers PutObject, CopyObject and CompleteMultipartUpload), and
    nothing written; it was evaluated as 412 PreconditionFailed or 404 NoSuchKey."""
    b = "cond-both"
    s3.create_bucket(Bucket=b)
    etag = s3.put_object(Bucket=b, Key="k", Body=b"1")["ETag"]
    both = {"IfMatch": etag, "IfNoneMatch": "*"}
    for call in (lambda: s3.put_object(Bucket=b, Key="k", Body=b"2", **both),
                 lambda: s3.put_object(Bucket=b, Key="new", Body=b"2", **both),
                 lambda: s3.copy_object(Bucket=b, Key="k", CopySource={"Bucket": b, "Key": "k"},
                                        MetadataDirective="REPLACE", **both),
                 _mpu(s3, b, "k", **both)):
        with pytest.raises(ClientError) as e:
            call()
        r = e.value.response
        assert (r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]) == (
            501, "NotImplemented")
        assert r["Error"]["Header"] == "If-Match,If-None-Match"
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"1"
    assert _err(s3.head_object, Bucket=b, Key="new") == (404, "404")


def test_read_with_if_match_and_if_none_match_follows_rfc9110(s3) -> None:
    """GET/HEAD with both: If-Match first (false: 412), then If-None-Match (a match: 304),
    RFC 9110 section 13.2.2's order."""
    b = "cond-read-both"
    s3.create_bucket(Bucket=b)
    etag = s3.put_object(Bucket=b, Key="k", Body=b"1")["ETag"]
    for call in (s3.get_object, s3.head_object):
        assert _err(call, Bucket=b, Key="k", IfMatch=etag, IfNoneMatch=etag)[0] == 304
        assert _err(call, Bucket=b, Key="k", IfMatch='"zz"', IfNoneMatch=etag)[0] == 412
        assert _err(call, Bucket=b, Key="k", IfMatch='"zz"', IfNoneMatch='"yy"')[0] == 412
        r = call(Bucket=b, Key="k", IfMatch=etag, IfNoneMatch='"yy"')
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_read_conditions_with_weak_etags(s3) -> None:
    """GET/HEAD: `If-None-Match: W/"<etag>"` is a 304 (weak comparison), `If-Match:
    W/"<etag>"` a 412 (strong comparison), RFC 7232 sections 3.1-3.2, which AWS's
    GetObject and HeadObject references name."""
    b = "cond-read-weak"
    s3.create_bucket(Bucket=b)
    etag = s3.put_object(Bucket=b, Key="k", Body=b"1")["ETag"]
    for call in (s3.get_object, s3.head_object):
        assert _err(call, Bucket=b, Key="k", IfNoneMatch="W/" + etag)[0] == 304
        assert _err(call, Bucket=b, Key="k", IfMatch="W/" + etag)[0] == 412
        r = call(Bucket=b, Key="k", IfNoneMatch='W/"other"')
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
