"""Attacks across tenants on grants: a bucket policy grants only on the objects its bucket's
tenant owns (AWS: "These permissions don't apply to objects that are owned by other AWS
accounts"), so the bucket's tenant cannot open, through a policy, an object another tenant
wrote into its bucket and kept private; and every read path (GET, HEAD, range, partNumber,
GetObjectAttributes, CopyObject and UploadPartCopy sources, presigned URLs) asks the same."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster, fetch

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    """Tenant `a` owns a bucket where tenant `c` (granted WRITE) wrote private objects;
    tenant `b` is a third party; `a` also owns an object of its own there."""
    tag = uuid.uuid4().hex[:8]
    ids = {n: n * 56 + tag for n in "abc"}
    cl = {n: cluster.tenant_client(f"ga-{n}-{tag}", {"canonical_id": ids[n]}) for n in "abc"}
    bucket = f"ga-{tag}"
    cl["a"].create_bucket(Bucket=bucket)
    cl["a"].put_bucket_acl(Bucket=bucket, GrantWrite=f"id={ids['c']}",
                           GrantFullControl=f"id={ids['a']}")
    cl["c"].put_object(Bucket=bucket, Key="c-private", Body=b"c's secret" * 1000)
    cl["c"].put_object(Bucket=bucket, Key="c-shared", Body=b"c shares this",
                       GrantRead=f"id={ids['b']}")
    cl["a"].put_object(Bucket=bucket, Key="a-own", Body=b"a's own")
    for n in "abc":
        cl[n].create_bucket(Bucket=f"{bucket}-{n}")
    return {"cl": cl, "ids": ids, "bucket": bucket, "endpoint": cluster.endpoint}


def _denied(fn: Callable[[], Any]) -> None:
    with pytest.raises(ClientError) as ei:
        fn()
    r = ei.value.response
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 403, r
    assert r["Error"]["Code"] in ("AccessDenied", "403"), r


def _reads(cl: Any, bucket: str, key: str, own: str) -> dict[str, Callable[[], Any]]:
    """Every way `cl` may read `bucket/key`'s bytes or attributes (copies into `own`)."""
    def part_copy() -> Any:
        up = cl.create_multipart_upload(Bucket=own, Key="pc")["UploadId"]
        try:
            return cl.upload_part_copy(Bucket=own, Key="pc", UploadId=up, PartNumber=1,
                                       CopySource={"Bucket": bucket, "Key": key})
        finally:
            cl.abort_multipart_upload(Bucket=own, Key="pc", UploadId=up)

    return {
        "GetObject": lambda: cl.get_object(Bucket=bucket, Key=key)["Body"].read(),
        "Range": lambda: cl.get_object(Bucket=bucket, Key=key, Range="bytes=0-3")["Body"].read(),
        "PartNumber": lambda: cl.get_object(Bucket=bucket, Key=key, PartNumber=1)["Body"].read(),
        "HeadObject": lambda: cl.head_object(Bucket=bucket, Key=key),
        "GetObjectAttributes": lambda: cl.get_object_attributes(
            Bucket=bucket, Key=key, ObjectAttributes=["ETag", "ObjectSize"]),
        "CopyObject": lambda: cl.copy_object(Bucket=own, Key="copy",
                                             CopySource={"Bucket": bucket, "Key": key}),
        "UploadPartCopy": part_copy,
    }


READS = list(_reads(None, "", "", ""))


def _allow_get(w: dict[str, Any], principal: Any) -> None:
    w["cl"]["a"].put_bucket_policy(Bucket=w["bucket"], Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": principal,
            "Action": ["s3:GetObject", "s3:GetObjectAttributes"],
            "Resource": f"arn:aws:s3:::{w['bucket']}/*"}]}))


@pytest.mark.parametrize("op", READS)
def test_bucket_policy_does_not_open_another_tenants_object(w: dict[str, Any], op: str) -> None:
    """`a`'s policy names `b`: `b` reads `a`'s object, but not `c`'s private one."""
    b = w["cl"]["b"]
    _allow_get(w, {"AWS": f"arn:aws:iam::{w['ids']['b']}:root"})
    own = f"{w['bucket']}-b"
    _denied(_reads(b, w["bucket"], "c-private", own)[op])
    _reads(b, w["bucket"], "a-own", own)[op]()       # the policy grants on a's objects
    _reads(b, w["bucket"], "c-shared", own)[op]()    # c's own grant to b


def test_public_policy_does_not_publish_another_tenants_object(w: dict[str, Any]) -> None:
    """A public (`*`) policy by the bucket's tenant: anonymous and presigned reads by a
    third tenant get `a`'s object, never `c`'s private one."""
    _allow_get(w, "*")
    base = f"{w['endpoint']}/{w['bucket']}"
    assert fetch(f"{base}/a-own") == (200, b"a's own")
    status, body = fetch(f"{base}/c-private")
    assert status == 403 and b"AccessDenied" in body and b"secret" not in body
    url = w["cl"]["b"].generate_presigned_url(
        "get_object", Params={"Bucket": w["bucket"], "Key": "c-private"})
    assert fetch(url)[0] == 403
    # c itself still reads what it wrote (its ACL), and a still does not
    cl = w["cl"]
    assert cl["c"].get_object(Bucket=w["bucket"], Key="c-private")["Body"].read()[:10] == (
        b"c's secret")
    _denied(lambda: cl["a"].get_object(Bucket=w["bucket"], Key="c-private"))


def test_explicit_deny_still_binds_the_object_owner(w: dict[str, Any]) -> None:
    """The bucket's tenant may still deny: its Deny binds reads of `c`'s object by `c`."""
    cl = w["cl"]
    cl["a"].put_bucket_policy(Bucket=w["bucket"], Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{w['bucket']}/c-private"}]}))
    try:
        _denied(lambda: cl["c"].get_object(Bucket=w["bucket"], Key="c-private"))
    finally:
        cl["a"].delete_bucket_policy(Bucket=w["bucket"])
