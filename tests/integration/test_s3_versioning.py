"""Versioning workflow through boto3 against a real cluster."""

from __future__ import annotations

import pytest
import requests
from botocore.exceptions import ClientError


def _versions(s3, bucket: str, **kw) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is delete marker) in listing order."""
    page = s3.list_object_versions(Bucket=bucket, **kw)
    out = [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in page.get("Versions", [])]
    out += [(v["Key"], v["VersionId"], v["IsLatest"], True)
            for v in page.get("DeleteMarkers", [])]
    return out


def test_versioning_workflow(s3) -> None:
    b = "versioning-flow"
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="k", Body=b"before")  # the "null" version
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=b)["Status"] == "Enabled"
    assert _versions(s3, b) == [("k", "null", True, False)]
    vids = [s3.put_object(Bucket=b, Key="k", Body=f"v{i}".encode())["VersionId"]
            for i in range(3)]
    listed = [v for v in s3.list_object_versions(Bucket=b)["Versions"]]
    assert [v["VersionId"] for v in listed] == [*reversed(vids), "null"]
    assert [v["IsLatest"] for v in listed] == [True, False, False, False]
    for i, vid in enumerate(vids):
        got = s3.get_object(Bucket=b, Key="k", VersionId=vid)
        assert got["Body"].read() == f"v{i}".encode() and got["VersionId"] == vid
    assert s3.get_object(Bucket=b, Key="k", VersionId="null")["Body"].read() == b"before"
    # Delete -> delete marker; GET is 404 with x-amz-delete-marker.
    res = s3.delete_object(Bucket=b, Key="k")
    assert res["DeleteMarker"] is True
    marker = res["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=b, Key="k")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    markers = s3.list_object_versions(Bucket=b)["DeleteMarkers"]
    assert [(m["VersionId"], m["IsLatest"]) for m in markers] == [(marker, True)]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=b, Key="k", VersionId=marker)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 405
    # Deleting the marker brings the object back.
    s3.delete_object(Bucket=b, Key="k", VersionId=marker)
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"v2"
    # Suspended: writes replace the null version.
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=b, Key="k", Body=b"s1")
    s3.put_object(Bucket=b, Key="k", Body=b"s2")
    vs = _versions(s3, b)
    assert [v[1] for v in vs] == ["null", *reversed(vids)]
    assert vs[0][2] is True
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"s2"
    assert s3.get_object(Bucket=b, Key="k", VersionId="null")["Body"].read() == b"s2"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=b, Key="k", VersionId="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    assert e.value.response["Error"]["Code"] == "NoSuchVersion"
    for v in _versions(s3, b):
        s3.delete_object(Bucket=b, Key=v[0], VersionId=v[1])
    assert _versions(s3, b) == []
    s3.delete_bucket(Bucket=b)


def test_list_versions_paging(s3) -> None:
    b = "versioning-paging"
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    expected = []
    for key in ("a", "b", "c", "d"):
        vids = [s3.put_object(Bucket=b, Key=key, Body=b"x")["VersionId"] for _ in range(3)]
        expected += [(key, v) for v in reversed(vids)]
    got: list[tuple[str, str]] = []
    kw: dict[str, str] = {}
    while True:
        page = s3.list_object_versions(Bucket=b, MaxKeys=5, **kw)
        got += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
        if not page["IsTruncated"]:
            break
        kw = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}
    assert got == expected
    latest = [v["Key"] for v in s3.list_object_versions(Bucket=b)["Versions"] if v["IsLatest"]]
    assert latest == ["a", "b", "c", "d"]
    page = s3.list_object_versions(Bucket=b, KeyMarker="b")
    assert [v["Key"] for v in page["Versions"]][:1] == ["c"]
    # a malformed version-id marker is refused as S3 does, not read as "past every version
    # of the key" (it silently skipped the rest of b's versions: review12c)
    with pytest.raises(ClientError) as e:
        s3.list_object_versions(Bucket=b, KeyMarker="b", VersionIdMarker="bogus")
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    assert e.value.response["Error"]["Message"] == "Invalid version id specified"
    page = s3.list_object_versions(Bucket=b, KeyMarker="b", VersionIdMarker="null")
    assert page["ResponseMetadata"]["HTTPStatusCode"] == 200  # "null" names a version
    for key, vid in expected:
        s3.delete_object(Bucket=b, Key=key, VersionId=vid)
    s3.delete_bucket(Bucket=b)


def test_mfa_delete_enabled_is_refused_not_ignored(s3) -> None:
    """MfaDelete Enabled was accepted and never enforced (nor reported by GET): it is 501
    NotImplemented now, and the versioning state is left as it was; Disabled is the truth."""
    b = "vers-mfa"
    s3.create_bucket(Bucket=b)
    with pytest.raises(ClientError) as e:
        s3.put_bucket_versioning(Bucket=b, MFA="arn:aws:iam::1:mfa/x 123456",
                                 VersioningConfiguration={"Status": "Enabled",
                                                          "MFADelete": "Enabled"})
    r = e.value.response
    assert (r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]) == (501,
                                                                             "NotImplemented")
    assert "Status" not in s3.get_bucket_versioning(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled",
                                                                "MFADelete": "Disabled"})
    assert s3.get_bucket_versioning(Bucket=b)["Status"] == "Enabled"


def test_empty_or_malformed_version_id_is_invalid_argument(s3) -> None:
    """`?versionId=` with no value: S3 answers 400 InvalidArgument ('Version id cannot be the
    empty string') on every object operation; it was 404 NoSuchVersion on reads and, on a
    DELETE, went on as if no version had been named."""
    b = "vers-empty-id"
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=b, Key="k", Body=b"x")
    for call in (s3.get_object, s3.head_object, s3.delete_object, s3.get_object_tagging):
        with pytest.raises(ClientError) as e:
            call(Bucket=b, Key="k", VersionId="")
        r = e.value.response
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 400, call
        assert call == s3.head_object or r["Error"]["Code"] == "InvalidArgument"
    # A malformed id is 400 too (the copy source's as well); a well-formed unknown one is 404.
    for call in (s3.get_object, s3.delete_object):
        with pytest.raises(ClientError) as e:
            call(Bucket=b, Key="k", VersionId="bogus")
        assert e.value.response["Error"]["Code"] == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=b, Key="c", CopySource={"Bucket": b, "Key": "k", "VersionId": "b"})
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=b, Key="k", VersionId="B" * 32)
    assert e.value.response["Error"]["Code"] == "NoSuchVersion"
    assert [v["IsLatest"] for v in s3.list_object_versions(Bucket=b)["Versions"]] == [True]
    assert "DeleteMarkers" not in s3.list_object_versions(Bucket=b)


def test_delete_objects_checks_each_version_id(s3) -> None:
    """DeleteObjects read an empty <VersionId/> as "no version" (it wrote a delete marker that
    hid the current object) and answered a malformed one Deleted. Each such key now gets the
    DELETE ?versionId= answer, a per-key InvalidArgument; the object stays current and the
    other keys are deleted as asked."""
    b = "vers-batch-ids"
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    vid = s3.put_object(Bucket=b, Key="k", Body=b"x")["VersionId"]
    s3.put_object(Bucket=b, Key="other", Body=b"o")
    res = s3.delete_objects(Bucket=b, Delete={"Objects": [
        {"Key": "k", "VersionId": ""}, {"Key": "k", "VersionId": "bogus"}, {"Key": "other"}]})
    errors = sorted((e["Key"], e.get("VersionId"), e["Code"], e["Message"])
                    for e in res.get("Errors", []))
    assert errors == [("k", "", "InvalidArgument", "Version id cannot be the empty string"),
                      ("k", "bogus", "InvalidArgument", "Invalid version id specified")]
    assert [(d["Key"], d.get("DeleteMarker")) for d in res["Deleted"]] == [("other", True)]
    got = s3.get_object(Bucket=b, Key="k")
    assert got["Body"].read() == b"x" and got["VersionId"] == vid
    markers = s3.list_object_versions(Bucket=b, Prefix="k").get("DeleteMarkers", [])
    assert markers == []


def test_version_id_checked_only_where_aws_takes_it(s3) -> None:
    """The version-id rule ran for every keyed operation and before the bucket lookup: a
    PutObject with ?versionId=bogus was 400 (AWS ignores the parameter there) and a missing
    bucket answered InvalidArgument. Now PutObject stores, and NoSuchBucket comes first."""
    b = "vers-id-scope"
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})

    def add(request, **_kw):  # type: ignore[no-untyped-def]
        request.url += ("&" if "?" in request.url else "?") + "versionId=bogus"
    s3.meta.events.register_first("before-sign.s3.PutObject", add)
    try:
        vid = s3.put_object(Bucket=b, Key="k", Body=b"new")["VersionId"]
    finally:
        s3.meta.events.unregister("before-sign.s3.PutObject", add)
    assert s3.get_object(Bucket=b, Key="k", VersionId=vid)["Body"].read() == b"new"
    with pytest.raises(ClientError) as e:
        s3.put_object_tagging(Bucket=b, Key="k", VersionId="bogus",
                              Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="vers-id-scope-missing", Key="x", VersionId="bogus")
    r = e.value.response
    assert (r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]) == (404,
                                                                             "NoSuchBucket")


def test_version_id_headers_as_aws_sends_them(s3) -> None:
    """x-amz-version-id as AWS answers it. Writes into a Suspended bucket (PUT, POST, copy,
    complete) send none, not even null (PutObject's sample responses; versitygw#2164);
    GET/HEAD of the null version of a versioned bucket send null (versitygw#2165); a
    never-versioned bucket sends none; a Suspended DELETE names its null marker; DELETE of a
    version that does not exist is 204 echoing the id (minio#11090, versitygw#1758)."""
    b = "versioning-headers"
    s3.create_bucket(Bucket=b)
    hdr = lambda r: r["ResponseMetadata"]["HTTPHeaders"]  # noqa: E731
    s3.put_object(Bucket=b, Key="old", Body=b"o")
    for r in (s3.get_object(Bucket=b, Key="old"), s3.head_object(Bucket=b, Key="old")):
        assert "x-amz-version-id" not in hdr(r)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    gone = s3.put_object(Bucket=b, Key="k", Body=b"1")["VersionId"]
    s3.delete_object(Bucket=b, Key="k", VersionId=gone)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Suspended"})
    wrote = [s3.put_object(Bucket=b, Key="k", Body=b"s"),
             s3.copy_object(Bucket=b, Key="c", CopySource={"Bucket": b, "Key": "k"})]
    uid = s3.create_multipart_upload(Bucket=b, Key="m")["UploadId"]
    etag = s3.upload_part(Bucket=b, Key="m", UploadId=uid, PartNumber=1, Body=b"p")["ETag"]
    wrote.append(s3.complete_multipart_upload(
        Bucket=b, Key="m", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}))
    assert all("x-amz-version-id" not in hdr(r) for r in wrote)
    post = s3.generate_presigned_post(b, "p", ExpiresIn=600)
    r = requests.post(post["url"], data=post["fields"], files={"file": ("f", b"x")}, timeout=30)
    assert r.status_code == 204 and "x-amz-version-id" not in r.headers
    for key in ("old", "k", "p"):
        for r in (s3.get_object(Bucket=b, Key=key), s3.head_object(Bucket=b, Key=key),
                  s3.get_object(Bucket=b, Key=key, VersionId="null")):
            assert hdr(r)["x-amz-version-id"] == "null"
    r = s3.delete_object(Bucket=b, Key="k")
    assert (hdr(r)["x-amz-version-id"], hdr(r)["x-amz-delete-marker"]) == ("null", "true")
    for key in ("k", "absent"):
        r = s3.delete_object(Bucket=b, Key=key, VersionId=gone)
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 204 and r["VersionId"] == gone
    for v in _versions(s3, b):
        s3.delete_object(Bucket=b, Key=v[0], VersionId=v[1])
    s3.delete_bucket(Bucket=b)


def test_null_version_of_a_never_versioned_bucket(s3) -> None:
    """versionId=null names the one version of a never-versioned bucket's key (the answers
    of OpenStack Swift's s3api tests run against AWS, test_null_version_get): GET and HEAD
    200, a key that never was 404 NoSuchVersion, DELETE removes it for good."""
    b = "never-versioned-null"
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="k", Body=b"only")
    assert s3.get_object(Bucket=b, Key="k", VersionId="null")["Body"].read() == b"only"
    assert s3.head_object(Bucket=b, Key="k", VersionId="null")["ContentLength"] == 4
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as e:
            call(Bucket=b, Key="never", VersionId="null")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=b, Key="never", VersionId="null")
    assert e.value.response["Error"]["Code"] == "NoSuchVersion"
    r = s3.delete_object(Bucket=b, Key="k", VersionId="null")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204 and "DeleteMarker" not in r
    assert _versions(s3, b) == []
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=b, Key="k")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"


def test_versions_page_ending_on_a_common_prefix(s3) -> None:
    """A delimited versions page that ends on a common prefix: NextKeyMarker is the prefix and
    no NextVersionIdMarker is sent (a prefix has no version; MinIO omits it too), and the
    next page resumes past the prefix."""
    b = "versions-cp-end"
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    for k in ("a", "b/1", "b/2", "c"):
        s3.put_object(Bucket=b, Key=k, Body=b"x")
    page = s3.list_object_versions(Bucket=b, Delimiter="/", MaxKeys=2)
    assert [v["Key"] for v in page["Versions"]] == ["a"]
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["b/"]
    assert page["IsTruncated"] and page["NextKeyMarker"] == "b/"
    assert "NextVersionIdMarker" not in page
    nxt = s3.list_object_versions(Bucket=b, Delimiter="/", MaxKeys=2,
                                  KeyMarker=page["NextKeyMarker"])
    assert [v["Key"] for v in nxt["Versions"]] == ["c"] and not nxt["IsTruncated"]
    assert "CommonPrefixes" not in nxt


def test_deleting_the_null_version_kept_only_as_current_names_it(s3) -> None:
    """A key written before versioning was enabled is its "null" version, kept in its current
    record alone until a newer version is written; deleting it by id answers
    x-amz-version-id: null like any version delete (the header was missing)."""
    b = "versioning-null-only"
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="k", Body=b"before")
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    res = s3.delete_object(Bucket=b, Key="k", VersionId="null")
    assert res["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert res["VersionId"] == "null" and "DeleteMarker" not in res
    assert _versions(s3, b) == []
