"""SigV2 (header and query-string) authentication with boto3's own SigV2 signer, presigned
URLs fetched over plain HTTP, and AWS's errors for skew, expiry and bad signatures."""

from __future__ import annotations

import time
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from ops.botoconfig import no_retries
from tests.integration.cluster import LocalCluster, fetch


def _client(cluster: LocalCluster, secret: str | None = None):  # type: ignore[no-untyped-def]
    env = cluster.env
    return boto3.client("s3", endpoint_url=cluster.endpoint,
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=secret or env["AWS_SECRET_ACCESS_KEY"],
                        region_name="us-east-1",
                        config=no_retries(signature_version="s3"))


@pytest.fixture(scope="module")
def v2(cluster: LocalCluster) -> dict[str, Any]:
    c = _client(cluster)
    bucket = f"sigv2-{uuid.uuid4().hex[:10]}"
    c.create_bucket(Bucket=bucket)
    return {"c": c, "b": bucket, "cluster": cluster}


def test_sigv2_header_auth_for_object_and_bucket_operations(v2: dict[str, Any]) -> None:
    c, b = v2["c"], v2["b"]
    key = "dir/a b+c?é"
    c.put_object(Bucket=b, Key=key, Body=b"v2 body", Metadata={"m": "1"})
    assert c.get_object(Bucket=b, Key=key)["Body"].read() == b"v2 body"
    assert [o["Key"] for o in c.list_objects(Bucket=b)["Contents"]] == [key]
    c.put_object_tagging(Bucket=b, Key=key, Tagging={"TagSet": [{"Key": "t", "Value": "v"}]})
    assert c.get_object_tagging(Bucket=b, Key=key)["TagSet"] == [{"Key": "t", "Value": "v"}]
    assert c.get_bucket_acl(Bucket=b)["Grants"][0]["Permission"] == "FULL_CONTROL"
    with pytest.raises(ClientError) as ei:
        _client(v2["cluster"], secret="wrong" * 8).get_object(Bucket=b, Key=key)
    assert ei.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_sigv2_date_skew_is_refused(v2: dict[str, Any]) -> None:
    c = v2["c"]
    old = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 3600))
    c.meta.events.register("before-sign.s3.HeadBucket",
                           lambda request, **_: request.headers.__setitem__("x-amz-date", old))
    with pytest.raises(ClientError) as ei:
        c.head_bucket(Bucket=v2["b"])
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    c.meta.events.unregister("before-sign.s3.HeadBucket")


def test_sigv2_presigned_urls(v2: dict[str, Any]) -> None:
    c, b = v2["c"], v2["b"]
    c.put_object(Bucket=b, Key="p", Body=b"presigned")
    url = c.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "p"},
                                   ExpiresIn=300)
    assert "AWSAccessKeyId=" in url and "Signature=" in url
    assert fetch(url) == (200, b"presigned")
    expired = c.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "p"},
                                       ExpiresIn=-10)
    status, body = fetch(expired)
    assert status == 403 and b"<Code>AccessDenied</Code>" in body
    tampered = url.replace("/p?", "/q?")
    status, body = fetch(tampered)
    assert status == 403 and b"SignatureDoesNotMatch" in body
