"""Tenant isolation: every S3 operation by another tenant on a bucket is AccessDenied, with
boto3 and presigned URLs, and bucket policies narrow access only within the owning tenant."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster, fetch


@pytest.fixture(scope="module")
def world(cluster: LocalCluster) -> dict[str, Any]:
    """Tenants A and B, each with a versioned bucket holding one tagged object."""
    tag = uuid.uuid4().hex[:8]
    a, b = cluster.tenant_client(f"iso-a-{tag}"), cluster.tenant_client(f"iso-b-{tag}")
    ba, bb = f"iso-a-{tag}", f"iso-b-{tag}"
    for client, bucket in ((a, ba), (b, bb)):
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket,
                                     VersioningConfiguration={"Status": "Enabled"})
        client.put_object(Bucket=bucket, Key="obj", Body=b"data of " + bucket.encode())
        client.put_bucket_tagging(Bucket=bucket,
                                  Tagging={"TagSet": [{"Key": "t", "Value": "v"}]})
    up = a.create_multipart_upload(Bucket=ba, Key="mp")["UploadId"]
    return {"a": a, "b": b, "ba": ba, "bb": bb, "upload": up}


def _ops(bucket: str, other: str, upload: str) -> dict[str, Callable[[Any], Any]]:
    tagging = {"TagSet": [{"Key": "x", "Value": "y"}]}
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*"}]})
    return {
        "ListObjectsV2": lambda c: c.list_objects_v2(Bucket=bucket),
        "ListObjects": lambda c: c.list_objects(Bucket=bucket),
        "ListObjectVersions": lambda c: c.list_object_versions(Bucket=bucket),
        "HeadBucket": lambda c: c.head_bucket(Bucket=bucket),
        "GetBucketLocation": lambda c: c.get_bucket_location(Bucket=bucket),
        "GetObject": lambda c: c.get_object(Bucket=bucket, Key="obj")["Body"].read(),
        "GetObjectMissingKey": lambda c: c.get_object(Bucket=bucket, Key="nope"),
        "HeadObject": lambda c: c.head_object(Bucket=bucket, Key="obj"),
        "HeadObjectMissingKey": lambda c: c.head_object(Bucket=bucket, Key="nope"),
        "PutObject": lambda c: c.put_object(Bucket=bucket, Key="new", Body=b"x"),
        "DeleteObject": lambda c: c.delete_object(Bucket=bucket, Key="new"),
        "DeleteObjects": lambda c: c.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": "new"}]}),
        "CopyObjectFrom": lambda c: c.copy_object(
            Bucket=other, Key="copied", CopySource={"Bucket": bucket, "Key": "obj"}),
        "CopyObjectTo": lambda c: c.copy_object(
            Bucket=bucket, Key="copied", CopySource={"Bucket": other, "Key": "obj"}),
        "CreateMultipartUpload": lambda c: c.create_multipart_upload(Bucket=bucket, Key="m2"),
        "UploadPart": lambda c: c.upload_part(Bucket=bucket, Key="mp", UploadId=upload,
                                              PartNumber=1, Body=b"p"),
        "ListParts": lambda c: c.list_parts(Bucket=bucket, Key="mp", UploadId=upload),
        "ListMultipartUploads": lambda c: c.list_multipart_uploads(Bucket=bucket),
        "GetBucketVersioning": lambda c: c.get_bucket_versioning(Bucket=bucket),
        "PutBucketVersioning": lambda c: c.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}),
        "GetBucketTagging": lambda c: c.get_bucket_tagging(Bucket=bucket),
        "PutBucketTagging": lambda c: c.put_bucket_tagging(Bucket=bucket, Tagging=tagging),
        "GetObjectTagging": lambda c: c.get_object_tagging(Bucket=bucket, Key="obj"),
        "PutObjectTagging": lambda c: c.put_object_tagging(Bucket=bucket, Key="obj",
                                                           Tagging=tagging),
        "PutBucketPolicy": lambda c: c.put_bucket_policy(Bucket=bucket, Policy=policy),
        "GetBucketPolicy": lambda c: c.get_bucket_policy(Bucket=bucket),
        "DeleteBucketPolicy": lambda c: c.delete_bucket_policy(Bucket=bucket),
        "GetBucketEncryption": lambda c: c.get_bucket_encryption(Bucket=bucket),
        "AbortMultipartUpload": lambda c: c.abort_multipart_upload(Bucket=bucket, Key="mp",
                                                                   UploadId=upload),
        "DeleteBucket": lambda c: c.delete_bucket(Bucket=bucket),
    }


OPS = list(_ops("b", "o", "u"))


def _code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


@pytest.mark.parametrize("op", OPS)
def test_other_tenant_is_denied(world: dict[str, Any], op: str) -> None:
    fn = _ops(world["ba"], world["bb"], world["upload"])[op]
    with pytest.raises(ClientError) as ei:
        fn(world["b"])
    # HEAD answers have no body: botocore reports the status code as the error code.
    assert _code(ei.value) in ("AccessDenied", "403"), (op, ei.value.response)
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_owner_may_do_every_operation(world: dict[str, Any]) -> None:
    ops = _ops(world["ba"], world["ba"], world["upload"])
    failures = {}
    for name, fn in ops.items():
        if name in ("GetObjectMissingKey", "HeadObjectMissingKey", "DeleteBucket"):
            continue
        try:
            fn(world["a"])
        except ClientError as exc:
            if _code(exc) not in ("NoSuchTagSet", "NoSuchBucketPolicy"):
                failures[name] = _code(exc)
    assert failures == {}
    with pytest.raises(ClientError) as ei:
        world["a"].get_object(Bucket=world["ba"], Key="nope")
    assert _code(ei.value) == "NoSuchKey"


def test_presigned_urls_do_not_cross_tenants(world: dict[str, Any]) -> None:
    a, b, ba = world["a"], world["b"], world["ba"]
    own = a.generate_presigned_url("get_object", Params={"Bucket": ba, "Key": "obj"})
    assert fetch(own) == (200, b"data of " + ba.encode())
    for method, params in (("get_object", {"Key": "obj"}), ("get_object", {"Key": "nope"}),
                           ("head_object", {"Key": "obj"}), ("put_object", {"Key": "p"}),
                           ("delete_object", {"Key": "obj"}), ("list_objects_v2", {})):
        url = b.generate_presigned_url(method, Params={"Bucket": ba, **params})
        http = {"put_object": "PUT", "delete_object": "DELETE", "head_object": "HEAD"}
        status, body = fetch(url, http.get(method, "GET"),
                              b"x" if method == "put_object" else None)
        assert status == 403, (method, status, body)
        if method != "head_object":
            assert b"<Code>AccessDenied</Code>" in body
    assert a.get_object(Bucket=ba, Key="obj")["Body"].read() == b"data of " + ba.encode()


def test_bucket_policy_narrows_within_tenant_and_opens_public_read(
        cluster: LocalCluster, world: dict[str, Any]) -> None:
    a, b = world["a"], world["b"]
    bucket = f"pol-{uuid.uuid4().hex[:8]}"
    a.create_bucket(Bucket=bucket)
    for k in ("public/p.txt", "secret/s.txt", "other/o.txt"):
        a.put_object(Bucket=bucket, Key=k, Body=k.encode())
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/public/*"},
        {"Effect": "Deny", "Principal": "*", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": f"arn:aws:s3:::{bucket}/secret/*"},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
         "Resource": f"arn:aws:s3:::{bucket}/*"},
    ]}
    base = f"{cluster.endpoint}/{bucket}"
    assert fetch(f"{base}/public/p.txt")[0] == 403  # no policy yet: private
    a.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    # Anonymous: public-read for public/* only, and only reads.
    assert fetch(f"{base}/public/p.txt") == (200, b"public/p.txt")
    assert fetch(f"{base}/public/p.txt", "HEAD")[0] == 200
    # a missing key is 403 to a caller allowed s3:GetObject without s3:ListBucket (AWS)
    assert fetch(f"{base}/public/none")[0] == 403
    assert fetch(f"{base}/other/o.txt")[0] == 403
    assert fetch(f"{base}/secret/s.txt")[0] == 403
    assert fetch(f"{base}/public/new", "PUT", b"x")[0] == 403
    assert fetch(f"{base}/public/p.txt", "DELETE")[0] == 403
    assert fetch(f"{base}?list-type=2")[0] == 403
    # A missing bucket is NoSuchBucket to anonymous callers too, as AWS answers (issue 14).
    assert fetch(f"{cluster.endpoint}/no-such-bucket-{uuid.uuid4().hex[:6]}/k")[0] == 404
    # The owner: Deny statements bite, the rest stays allowed.
    assert a.get_object(Bucket=bucket, Key="other/o.txt")["Body"].read() == b"other/o.txt"
    for fn in (lambda: a.get_object(Bucket=bucket, Key="secret/s.txt"),
               lambda: a.put_object(Bucket=bucket, Key="secret/new", Body=b"x"),
               lambda: a.delete_object(Bucket=bucket, Key="other/o.txt")):
        with pytest.raises(ClientError) as ei:
            fn()
        assert _code(ei.value) == "AccessDenied"
    # A denied object cannot be read by copying it elsewhere either.
    a.create_bucket(Bucket=bucket + "-dst")
    with pytest.raises(ClientError) as ei:
        a.copy_object(Bucket=bucket + "-dst", Key="leak",
                      CopySource={"Bucket": bucket, "Key": "secret/s.txt"})
    assert _code(ei.value) == "AccessDenied"
    a.copy_object(Bucket=bucket + "-dst", Key="ok",
                  CopySource={"Bucket": bucket, "Key": "other/o.txt"})
    # Principal "*" is everyone, another tenant's signed request included (AWS, issue 14);
    # what the policy does not grant stays denied to it.
    assert b.get_object(Bucket=bucket, Key="public/p.txt")["Body"].read() == b"public/p.txt"
    for fn in (lambda: b.get_object(Bucket=bucket, Key="other/o.txt"),
               lambda: b.put_object(Bucket=bucket, Key="public/x", Body=b"x"),
               lambda: b.list_objects_v2(Bucket=bucket)):
        with pytest.raises(ClientError) as ei:
            fn()
        assert _code(ei.value) == "AccessDenied"
    # The owner can always remove its policy.
    a.delete_bucket_policy(Bucket=bucket)
    a.delete_object(Bucket=bucket, Key="other/o.txt")
    assert fetch(f"{base}/public/p.txt")[0] == 403


# --- hardening: garbage on the wire --------------------------------------------------------


def _raw(host: str, port: int, data: bytes) -> bytes:
    import socket

    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def test_garbage_requests_get_4xx_and_the_server_keeps_serving(
        cluster: LocalCluster, world: dict[str, Any]) -> None:
    import random

    rnd = random.Random(1234)
    host, port = "127.0.0.1", cluster.port
    bucket = world["ba"]
    sig = "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, " \
          "SignedHeaders=host, Signature=" + "0" * 64
    cases = [
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40000 + b"\r\n\r\n",
        f"GET /{bucket}/obj HTTP/1.1\r\nHost: x\r\nAuthorization: {sig}\r\n\r\n".encode(),
        f"GET /{bucket}/obj HTTP/1.1\r\nHost: x\r\nAuthorization: AWS4-HMAC-SHA256 ,,,="
        "\r\n\r\n".encode(),
        f"PUT /{bucket}/k HTTP/1.1\r\nHost: x\r\nAuthorization: {sig}\r\nx-amz-date: "
        "20260101T000000Z\r\nx-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\nnot hex\r\n".encode(),
        f"GET /{bucket}/..%2f..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        b"GET /%00%ff%fe/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /{bucket}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=%ZZ HTTP/1.1\r\n"
        "Host: x\r\n\r\n".encode(),
    ]
    cases += [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 400))) for _ in range(20)]
    for data in cases:
        resp = _raw(host, port, data)
        if resp:
            status = int(resp.split(b" ", 2)[1])
            assert 400 <= status < 500, (data[:60], resp[:200])
    # Valid-signature requests with malformed XML bodies: 4xx, never 500.
    a = world["a"]
    for fn in (lambda: a.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [
                   {"Key": "k" * 300, "Value": "v"}]}),
               lambda: a.put_object(Bucket=bucket, Key="m", Body=b"x",
                                    Metadata={"a": "v" * 3000})):
        with pytest.raises(ClientError) as ei:
            fn()
        assert 400 <= ei.value.response["ResponseMetadata"]["HTTPStatusCode"] < 500
    assert a.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"data of " + bucket.encode()
