"""review17e: DeleteObjects' per-key checks must see each key's own condition keys. A key's
VersionId (from the XML) is its s3:VersionId, as on DELETE ?versionId=; the request URL's
own parameters are not (they name no key)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    out: dict[str, Any] = {"tag": tag}
    for t in ("a", "b"):
        out[t] = cluster.tenant_client(f"r17e-{t}-{tag}", {"canonical_id": t * 56 + tag})
        out["name_" + t] = f"r17e-{t}-{tag}"
    return out


def _versioned(w: dict[str, Any], suffix: str) -> tuple[str, str, str]:
    a, bucket = w["a"], f"r17e-{w['tag']}-{suffix}"
    a.create_bucket(Bucket=bucket)
    a.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = a.put_object(Bucket=bucket, Key="k", Body=b"1")["VersionId"]
    v2 = a.put_object(Bucket=bucket, Key="k", Body=b"2")["VersionId"]
    return bucket, v1, v2


def _versions(a: Any, bucket: str) -> set[str]:
    return {v["VersionId"] for v in a.list_object_versions(Bucket=bucket).get("Versions", [])}


def test_a_deny_on_one_version_holds_through_delete_objects(w: dict[str, Any]) -> None:
    a = w["a"]
    bucket, v1, _ = _versioned(w, "deny")
    a.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObjectVersion",
            "Resource": f"arn:aws:s3:::{bucket}/k",
            "Condition": {"StringEquals": {"s3:VersionId": v1}}}]}))
    with pytest.raises(ClientError) as ei:
        a.delete_object(Bucket=bucket, Key="k", VersionId=v1)
    assert ei.value.response["Error"]["Code"] == "AccessDenied"
    r = a.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k", "VersionId": v1}]})
    assert [e["Code"] for e in r.get("Errors", [])] == ["AccessDenied"], r
    assert v1 in _versions(a, bucket)


def test_the_url_version_id_is_not_every_key_s_version_id(w: dict[str, Any]) -> None:
    a, b = w["a"], w["b"]
    bucket, v1, v2 = _versioned(w, "allow")
    a.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": w["name_b"]},
            "Action": "s3:DeleteObjectVersion", "Resource": f"arn:aws:s3:::{bucket}/k",
            "Condition": {"StringEquals": {"s3:VersionId": v2}}}]}))

    def add_version_id(request: Any, **_: Any) -> None:
        request.url = request.url.replace("?delete", f"?delete&versionId={v2}")

    b.meta.events.register("before-sign.s3.DeleteObjects", add_version_id)
    try:
        r = b.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k", "VersionId": v1}]})
    finally:
        b.meta.events.unregister("before-sign.s3.DeleteObjects", add_version_id)
    assert [e["Code"] for e in r.get("Errors", [])] == ["AccessDenied"], r
    assert v1 in _versions(a, bucket)
