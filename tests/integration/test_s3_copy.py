"""CopyObject end to end with boto3: directives, preconditions, versions, tenants."""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster
from tests.integration.test_tenants import s3_for, tessera

MiB = 1024 * 1024
CONFIGS = [{}, {"request_checksum_calculation": "when_required"}]


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


@pytest.fixture(params=CONFIGS, ids=["default", "when_required"])
def s3(request: pytest.FixtureRequest, cluster: LocalCluster):  # type: ignore[no-untyped-def]
    return cluster.client(**request.param)


def test_copy_metadata_directives(s3) -> None:  # type: ignore[no-untyped-def]
    src_b, dst_b = uniq("cp-src"), uniq("cp-dst")
    s3.create_bucket(Bucket=src_b)
    s3.create_bucket(Bucket=dst_b)
    body = random.Random(1).randbytes(100_000)
    s3.put_object(Bucket=src_b, Key="a b+c", Body=body, ContentType="text/plain",
                  Metadata={"x": "1"}, Tagging="t=1")
    r = s3.copy_object(Bucket=dst_b, Key="copy", CopySource={"Bucket": src_b, "Key": "a b+c"})
    assert r["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=dst_b, Key="copy")
    assert got["Body"].read() == body
    assert got["ContentType"] == "text/plain" and got["Metadata"] == {"x": "1"}
    assert got.get("TagCount") == 1
    s3.copy_object(Bucket=dst_b, Key="replaced", CopySource=f"{src_b}/a b+c",
                   MetadataDirective="REPLACE", ContentType="application/json",
                   Metadata={"y": "2"}, TaggingDirective="REPLACE", Tagging="u=2&v=3")
    head = s3.head_object(Bucket=dst_b, Key="replaced")
    assert head["ContentType"] == "application/json" and head["Metadata"] == {"y": "2"}
    tags = s3.get_object_tagging(Bucket=dst_b, Key="replaced")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("u", "2"), ("v", "3")]


def test_copy_to_itself(s3) -> None:  # type: ignore[no-untyped-def]
    b = uniq("cp-self")
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="k", Body=b"same", Metadata={"a": "1"})
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=b, Key="k", CopySource={"Bucket": b, "Key": "k"})
    assert code(e) == "InvalidRequest"
    assert "copy an object to itself" in e.value.response["Error"]["Message"]
    s3.copy_object(Bucket=b, Key="k", CopySource={"Bucket": b, "Key": "k"},
                   MetadataDirective="REPLACE", Metadata={"a": "2"})
    got = s3.get_object(Bucket=b, Key="k")
    assert got["Body"].read() == b"same" and got["Metadata"] == {"a": "2"}


def test_copy_naming_the_current_version_onto_itself_is_a_restore(
        cluster: LocalCluster) -> None:
    """A copy source naming a version is a regular copy even onto its own key and even of
    the current version (a version restore; AWS and MinIO refuse only a source without
    versionId); it was 400 InvalidRequest when the named version was the current one. The
    same copy without versionId is still refused."""
    s3 = cluster.client()
    b = uniq("cp-self-v")
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="k", Body=b"unversioned")
    r = s3.copy_object(Bucket=b, Key="k", CopySource={"Bucket": b, "Key": "k",
                                                      "VersionId": "null"})
    assert r.get("CopySourceVersionId", "null") == "null"  # (never versioned: no header)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=b, Key="k", Body=b"one")["VersionId"]
    r = s3.copy_object(Bucket=b, Key="k", CopySource={"Bucket": b, "Key": "k",
                                                      "VersionId": v1})
    assert r["CopySourceVersionId"] == v1 and r["VersionId"] != v1
    got = s3.get_object(Bucket=b, Key="k")
    assert got["Body"].read() == b"one" and got["VersionId"] == r["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=b, Key="k", CopySource={"Bucket": b, "Key": "k"})
    assert code(e) == "InvalidRequest"
    versions = s3.list_object_versions(Bucket=b)["Versions"]
    assert [v["VersionId"] for v in versions] == [r["VersionId"], v1, "null"]
    for v in versions:
        s3.delete_object(Bucket=b, Key="k", VersionId=v["VersionId"])
    s3.delete_bucket(Bucket=b)


def test_copy_to_itself_changing_only_its_encryption(s3) -> None:  # type: ignore[no-untyped-def]
    """A copy onto itself that names encryption (SSE-S3 to SSE-KMS and back, an SSE-C key
    rotation) is legal, as AWS documents (the refusal names 'encryption attributes', and
    re-encrypting objects in place is AWS's advice); it was refused as if nothing changed.
    Data, metadata and tags stay (a copy naming nothing is still refused: the test above)."""
    import base64
    import hashlib

    b = uniq("cp-self-sse")
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="k", Body=b"same", Metadata={"a": "1"}, Tagging="t=1")
    src = {"Bucket": b, "Key": "k"}
    s3.copy_object(Bucket=b, Key="k", CopySource=src, ServerSideEncryption="aws:kms")
    head = s3.head_object(Bucket=b, Key="k")
    assert head["ServerSideEncryption"] == "aws:kms" and head["Metadata"] == {"a": "1"}
    s3.copy_object(Bucket=b, Key="k", CopySource=src, ServerSideEncryption="AES256")
    assert s3.head_object(Bucket=b, Key="k")["ServerSideEncryption"] == "AES256"
    keys = [bytes([n]) * 32 for n in (1, 2)]

    def sse_c(key: bytes, prefix: str = "") -> dict[str, str]:
        return {f"{prefix}SSECustomerAlgorithm": "AES256",
                f"{prefix}SSECustomerKey": base64.b64encode(key).decode(),
                f"{prefix}SSECustomerKeyMD5": base64.b64encode(hashlib.md5(key).digest()).decode()}
    s3.copy_object(Bucket=b, Key="k", CopySource=src, **sse_c(keys[0]))
    s3.copy_object(Bucket=b, Key="k", CopySource=src, **sse_c(keys[1]),
                   **sse_c(keys[0], "CopySource"))
    got = s3.get_object(Bucket=b, Key="k", **sse_c(keys[1]))
    assert got["Body"].read() == b"same" and got["Metadata"] == {"a": "1"}
    assert s3.get_object_tagging(Bucket=b, Key="k")["TagSet"] == [{"Key": "t", "Value": "1"}]


def test_copy_preconditions(s3) -> None:  # type: ignore[no-untyped-def]
    b = uniq("cp-cond")
    s3.create_bucket(Bucket=b)
    etag = s3.put_object(Bucket=b, Key="src", Body=b"payload")["ETag"]
    src = {"Bucket": b, "Key": "src"}
    past = datetime.now(UTC) - timedelta(days=1)
    future = datetime.now(UTC) + timedelta(days=1)
    failing = [{"CopySourceIfMatch": '"deadbeef"'}, {"CopySourceIfNoneMatch": etag},
               {"CopySourceIfModifiedSince": future},
               {"CopySourceIfUnmodifiedSince": past}]
    for cond in failing:
        with pytest.raises(ClientError) as e:
            s3.copy_object(Bucket=b, Key="dst", CopySource=src, **cond)
        assert code(e) == "PreconditionFailed", cond
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    for cond in ({"CopySourceIfMatch": etag}, {"CopySourceIfNoneMatch": '"other"'},
                 {"CopySourceIfModifiedSince": past},
                 {"CopySourceIfUnmodifiedSince": future},
                 {"CopySourceIfMatch": etag, "CopySourceIfUnmodifiedSince": past}):
        s3.copy_object(Bucket=b, Key="dst", CopySource=src, **cond)
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=b, Key="dst", CopySource=src, IfNoneMatch="*")
    assert code(e) == "PreconditionFailed"
    s3.copy_object(Bucket=b, Key="fresh", CopySource=src, IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "missing"})
    assert code(e) == "NoSuchKey"


def test_copy_versions_and_large_multipart_source(cluster: LocalCluster) -> None:
    s3 = cluster.client()
    b = uniq("cp-ver")
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=b, Key="k", Body=b"first")["VersionId"]
    s3.put_object(Bucket=b, Key="k", Body=b"second")
    r = s3.copy_object(Bucket=b, Key="old", CopySource={"Bucket": b, "Key": "k",
                                                        "VersionId": v1})
    assert r["CopySourceVersionId"] == v1 and r["VersionId"]
    assert s3.get_object(Bucket=b, Key="old")["Body"].read() == b"first"
    # A multipart source larger than one segment is streamed and re-encrypted.
    parts = [random.Random(5).randbytes(5 * MiB), random.Random(6).randbytes(3 * MiB)]
    uid = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    done = [{"PartNumber": i, "ETag": s3.upload_part(Bucket=b, Key="mp", UploadId=uid,
                                                      PartNumber=i, Body=p)["ETag"]}
            for i, p in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=uid,
                                 MultipartUpload={"Parts": done})
    s3.copy_object(Bucket=b, Key="mp-copy", CopySource={"Bucket": b, "Key": "mp"})
    got = s3.get_object(Bucket=b, Key="mp-copy")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(b"".join(parts)).digest()


def test_copy_across_tenants_denied(cluster: LocalCluster) -> None:
    name = uniq("cp-tenant")
    assert tessera(cluster, "tenant", "create", name).returncode == 0
    import json

    r = tessera(cluster, "key", "create", "--tenant", name, "--json")
    assert r.returncode == 0, r.stderr
    cred = json.loads(r.stdout)
    other = s3_for(cluster, cred["access_key_id"], cred["secret_access_key"])
    mine = cluster.client()
    src_b, dst_b = uniq("cp-mine"), uniq("cp-theirs")
    mine.create_bucket(Bucket=src_b)
    mine.put_object(Bucket=src_b, Key="secret", Body=b"s3cr3t")
    other.create_bucket(Bucket=dst_b)
    with pytest.raises(ClientError) as e:
        other.copy_object(Bucket=dst_b, Key="stolen", CopySource={"Bucket": src_b,
                                                                  "Key": "secret"})
    assert code(e) == "AccessDenied"


def test_copy_object_refuses_a_copy_source_range(cluster: LocalCluster) -> None:
    """CopyObject has no partial copy (only UploadPartCopy reads x-amz-copy-source-range):
    a range on it is 501 NotImplemented naming the header, never a whole-object copy."""
    s3 = cluster.client()
    bucket = uniq("cp-range")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="src", Body=b"0123456789")

    def add_range(request, **_: object) -> None:  # type: ignore[no-untyped-def]
        request.headers["x-amz-copy-source-range"] = "bytes=0-3"

    s3.meta.events.register("before-sign.s3.CopyObject", add_range)
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert code(exc) == "NotImplemented"
    assert exc.value.response["Error"].get("Header") == "x-amz-copy-source-range"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="dst")


def test_copy_source_header_forms(cluster: LocalCluster) -> None:
    """`x-amz-copy-source` as clients write it, sent verbatim (a before-sign hook sets the
    header): with or without a leading '/', a raw or %2B '+', '%2F' inside the key,
    percent-encoded UTF-8, and `?versionId=` naming an older version; CopyObject and
    UploadPartCopy read it alike (gateway/s3/copy_source.py)."""
    s3 = cluster.client()
    b = uniq("cp-forms")
    s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    old = s3.put_object(Bucket=b, Key="d/über+€", Body=b"old")["VersionId"]
    s3.put_object(Bucket=b, Key="d/über+€", Body=b"new")
    raw: dict[str, str] = {}

    def verbatim(request, **_) -> None:  # type: ignore[no-untyped-def]
        del request.headers["x-amz-copy-source"]  # (setting it would add a second one)
        request.headers["x-amz-copy-source"] = raw["value"]

    s3.meta.events.register("before-sign.s3.CopyObject", verbatim)
    s3.meta.events.register("before-sign.s3.UploadPartCopy", verbatim)
    enc = "d%2F%C3%BCber"
    for value, want in ((f"{b}/{enc}+%E2%82%AC", b"new"), (f"/{b}/{enc}%2B%E2%82%AC", b"new"),
                        (f"/{b}/d/%C3%BCber%2B%E2%82%AC?versionId={old}", b"old")):
        raw["value"] = value
        s3.copy_object(Bucket=b, Key="dst", CopySource="x/y")
        assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == want, value
        up = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
        s3.upload_part_copy(Bucket=b, Key="mp", UploadId=up, PartNumber=1, CopySource="x/y")
        s3.abort_multipart_upload(Bucket=b, Key="mp", UploadId=up)
    raw["value"] = f"{b}/d/%C3%BCber+%E2%82%AC?partNumber=1"
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=b, Key="dst", CopySource="x/y")
    assert code(e) == "InvalidArgument"
