"""mend17p: every per-key authorization sees that key's own condition keys, and what a
DeleteObjects caller with no possible grant gets; policies on condition keys no request here
carries (VPC endpoints, organizations, MFA) are stored and judged as AWS judges a request
without them.

lows18: s3:ExistingObjectTag is in the context of reads and subresource changes only, never
of PutObject/DeleteObject (AWS); aws:PrincipalArn, aws:PrincipalIsAWSService,
aws:ViaAWSService and aws:RequestedRegion carry their AWS meaning.

A DeleteObjects entry's VersionId is its s3:VersionId for the Object Lock bypass check as
for the delete itself; a copy's source versionId is the s3:VersionId of the source read (not
the destination URL's)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import requests
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from ops.botoconfig import no_retries
from tests.integration.cluster import LocalCluster
from tests.integration.tenant_pair import new_bucket, policy, refusal, two_tenants


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    """Tenants `a` (the owner) and `b`, and an anonymous client."""
    out = two_tenants(cluster, "pk")
    out["anon"] = boto3.client("s3", endpoint_url=cluster.endpoint, region_name="us-east-1",
                               config=no_retries(signature_version=UNSIGNED,
                                                 s3={"addressing_style": "path"}))
    return out


def _versions(a: Any, bucket: str) -> set[str]:
    return {v["VersionId"] for v in a.list_object_versions(Bucket=bucket).get("Versions", [])}


def test_delete_objects_bypass_is_checked_on_the_entry_version(w: dict[str, Any]) -> None:
    """A Deny of s3:BypassGovernanceRetention on version V1 holds through DeleteObjects
    (the URL carries no versionId: the old check saw none, so the Deny never matched)."""
    a = w["a"]
    bucket = new_bucket(w, ObjectLockEnabledForBucket=True)
    until = datetime.now(UTC) + timedelta(days=1)
    v1, v2 = (a.put_object(Bucket=bucket, Key="k", Body=body, ObjectLockMode="GOVERNANCE",
                           ObjectLockRetainUntilDate=until)["VersionId"] for body in (b"1", b"2"))
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*", "Action": "s3:BypassGovernanceRetention",
        "Resource": f"arn:aws:s3:::{bucket}/k",
        "Condition": {"StringEquals": {"s3:VersionId": v1}}}))
    r = a.delete_objects(Bucket=bucket, BypassGovernanceRetention=True,
                         Delete={"Objects": [{"Key": "k", "VersionId": v1}]})
    assert [e["Code"] for e in r.get("Errors", [])] == ["AccessDenied"], r
    assert v1 in _versions(a, bucket)
    # the Deny names V1 only: V2's bypass stands, through DeleteObjects as through DELETE
    r = a.delete_objects(Bucket=bucket, BypassGovernanceRetention=True,
                         Delete={"Objects": [{"Key": "k", "VersionId": v2}]})
    assert r.get("Errors", []) == [] and _versions(a, bucket) == {v1}
    a.delete_bucket_policy(Bucket=bucket)
    a.delete_object(Bucket=bucket, Key="k", VersionId=v1, BypassGovernanceRetention=True)


def test_a_copy_source_version_is_its_s3_version_id(w: dict[str, Any]) -> None:
    """A Deny of s3:GetObjectVersion on V1 refuses a copy of source V1, as it refuses
    GET ?versionId=V1; a copy of V2 still works."""
    a = w["a"]
    bucket = new_bucket(w)
    a.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1, v2 = (a.put_object(Bucket=bucket, Key="k", Body=body)["VersionId"]
              for body in (b"1", b"2"))
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*", "Action": "s3:GetObjectVersion",
        "Resource": f"arn:aws:s3:::{bucket}/k",
        "Condition": {"StringEquals": {"s3:VersionId": v1}}}))
    assert refusal(lambda: a.get_object(Bucket=bucket, Key="k", VersionId=v1)) == (
        403, "AccessDenied")
    assert refusal(lambda: a.copy_object(Bucket=bucket, Key="c", CopySource={
        "Bucket": bucket, "Key": "k", "VersionId": v1})) == (403, "AccessDenied")
    a.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "k",
                                                      "VersionId": v2})
    assert a.get_object(Bucket=bucket, Key="c")["Body"].read() == b"2"


def _raw_delete_objects(w: dict[str, Any], bucket: str) -> requests.Response:
    body = (b'<Delete><Object><Key>k</Key></Object></Delete>')
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    return requests.post(f"{w['endpoint']}/{bucket}?delete", data=body,
                         headers={"Content-MD5": md5}, timeout=60)


def test_delete_objects_with_no_possible_grant_is_refused_whole(w: dict[str, Any]) -> None:
    """On a bucket whose policy lets a caller delete nothing (and no ACL grants it WRITE),
    DeleteObjects answers 403 before reading the body, not 200 with a per-key error."""
    a, b = w["a"], w["b"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="k", Body=b"1")
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*"}))
    assert refusal(lambda: b.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k"}]})
                   ) == (403, "AccessDenied")
    r = _raw_delete_objects(w, bucket)
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content, r.content
    # a grant that could apply keeps the per-key answers: bucket WRITE through the ACL,
    # or a policy Allow of s3:DeleteObject on some keys
    a.put_bucket_acl(Bucket=bucket, GrantFullControl=f"id={'a' * 56 + w['tag']}",
                     GrantWrite=f"id={'b' * 56 + w['tag']}")
    r2 = b.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k"}]})
    assert [d["Key"] for d in r2.get("Deleted", [])] == ["k"], r2
    a.put_bucket_acl(Bucket=bucket, ACL="private")
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Allow", "Principal": {"AWS": w["name_b"]}, "Action": "s3:Delete*",
        "Resource": f"arn:aws:s3:::{bucket}/other/*"}))
    r3 = b.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k"}]})
    assert [e["Code"] for e in r3.get("Errors", [])] == ["AccessDenied"], r3


@pytest.mark.parametrize("condition,holds", [
    ({"StringEquals": {"aws:SourceVpce": "vpce-1a2b3c4d"}}, False),
    ({"StringNotEquals": {"aws:SourceVpce": "vpce-1a2b3c4d"}}, True),
    ({"StringEqualsIfExists": {"aws:SourceVpc": "vpc-111"}}, True),
    ({"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}, False),
    ({"Null": {"aws:PrincipalOrgID": "true"}}, True),
    ({"Null": {"aws:SourceVpc": "false"}}, False),
    ({"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}}, True),
])
def test_absent_condition_keys_are_stored_and_judged_missing(
        w: dict[str, Any], condition: dict[str, Any], holds: bool) -> None:
    """"Deny unless aws:SourceVpce" and its kin are stored (AWS accepts them) and judged as
    AWS judges a request without the key: the Deny applies exactly when the condition holds
    for a missing key."""
    a = w["a"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="k", Body=b"1")
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*", "Condition": condition}))
    if holds:
        assert refusal(lambda: a.get_object(Bucket=bucket, Key="k")) == (403, "AccessDenied")
    else:
        assert a.get_object(Bucket=bucket, Key="k")["Body"].read() == b"1"


def test_existing_object_tag_binds_reads_and_tagging_not_put_or_delete(
        w: dict[str, Any]) -> None:
    """AWS: "you cannot create a policy to grant or deny a user permissions to delete or
    overwrite an object based on its existing tags": for PutObject and DeleteObject the key is
    absent (a StringEquals on it never holds, a StringNotEquals always does), while a read or
    a tagging change sees the object's tags."""
    a = w["a"]
    bucket = new_bucket(w)
    for k in ("closed", "closed2"):
        a.put_object(Bucket=bucket, Key=k, Body=b"1", Tagging="class=closed")
    res = f"arn:aws:s3:::{bucket}/*"
    a.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Deny", "Principal": "*", "Resource": res,
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:PutObjectTagging"],
         "Condition": {"StringEquals": {"s3:ExistingObjectTag/class": "closed"}}}))
    assert refusal(lambda: a.get_object(Bucket=bucket, Key="closed")) == (403, "AccessDenied")
    assert refusal(lambda: a.put_object_tagging(
        Bucket=bucket, Key="closed", Tagging={"TagSet": []})) == (403, "AccessDenied")
    a.put_object(Bucket=bucket, Key="closed", Body=b"2", Tagging="class=closed")
    a.delete_object(Bucket=bucket, Key="closed")
    r = a.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "closed2"}]})
    assert [d["Key"] for d in r.get("Deleted", [])] == ["closed2"]
    assert "Contents" not in a.list_objects_v2(Bucket=bucket)
    # negated: the Deny applies to every write, the key being absent there
    a.put_object(Bucket=bucket, Key="open", Body=b"1", Tagging="class=open")
    a.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Deny", "Principal": "*", "Resource": res, "Action": "s3:PutObject",
         "Condition": {"StringNotEquals": {"s3:ExistingObjectTag/class": "open"}}}))
    assert refusal(lambda: a.put_object(Bucket=bucket, Key="open", Body=b"2")) == (
        403, "AccessDenied")


@pytest.mark.parametrize("key", ["aws:PrincipalArn", "aws:PrincipalIsAWSService",
                                 "aws:ViaAWSService", "aws:RequestedRegion"])
def test_principal_and_region_keys_have_their_aws_meaning(w: dict[str, Any], key: str) -> None:
    """A tenant is an account signing as its root user: aws:PrincipalArn is
    arn:aws:iam::<canonical id>:root and aws:PrincipalIsAWSService false, both absent for
    anonymous callers; aws:ViaAWSService is false and aws:RequestedRegion the gateway's region
    for every caller. A Deny unless the caller's own value is given binds others only."""
    a, b, anon = w["a"], w["b"], w["anon"]
    mine = {"aws:PrincipalArn": f"arn:aws:iam::{'a' * 56 + w['tag']}:root",
            "aws:PrincipalIsAWSService": "false", "aws:ViaAWSService": "false",
            "aws:RequestedRegion": "us-east-1"}[key]
    other = {"aws:PrincipalArn": f"arn:aws:iam::{'b' * 56 + w['tag']}:root",
             "aws:PrincipalIsAWSService": "true", "aws:ViaAWSService": "true",
             "aws:RequestedRegion": "eu-west-1"}[key]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="k", Body=b"1")
    res = f"arn:aws:s3:::{bucket}/*"
    a.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": res},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": res,
         "Condition": {"StringNotEquals": {key: mine}}}))
    assert a.get_object(Bucket=bucket, Key="k")["Body"].read() == b"1"
    denied_b = key == "aws:PrincipalArn"
    got_b = refusal(lambda: b.get_object(Bucket=bucket, Key="k")) if denied_b else None
    assert got_b in (None, (403, "AccessDenied"))
    if not denied_b:
        assert b.get_object(Bucket=bucket, Key="k")["Body"].read() == b"1"
    # anonymous: principal keys absent (StringNotEquals holds: denied), the others present
    signed_only = key in ("aws:PrincipalArn", "aws:PrincipalIsAWSService")
    if signed_only:
        assert refusal(lambda: anon.get_object(Bucket=bucket, Key="k"))[0] == 403
    else:
        assert anon.get_object(Bucket=bucket, Key="k")["Body"].read() == b"1"
    a.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": res,
         "Condition": {"StringEquals": {key: other}}}))
    assert a.get_object(Bucket=bucket, Key="k")["Body"].read() == b"1"
    assert a.get_bucket_policy(Bucket=bucket)["Policy"]


def test_a_deny_on_writes_keyed_on_existing_tags_is_warned_once(
        w: dict[str, Any], cluster: LocalCluster) -> None:
    """review18c L3: a stored Deny of s3:PutObject/s3:DeleteObject under a (positive)
    s3:ExistingObjectTag condition was enforced before lows18 and is void now, as on AWS:
    the gateway says so in its log when it loads the policy, once per gateway process (not
    per request), naming the bucket and the statement; a negated condition, which still
    applies to every write, and a Deny on reads only are not warned about."""
    a = w["a"]
    bucket = new_bucket(w)
    log = cluster.data / "logs" / "gateway.log"
    mark = log.stat().st_size
    res = f"arn:aws:s3:::{bucket}/*"
    a.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Sid": "KeepClosed", "Effect": "Deny", "Principal": "*", "Resource": res,
         "Action": ["s3:GetObject", "s3:DeleteObject"],
         "Condition": {"StringEquals": {"s3:ExistingObjectTag/class": "closed"}}},
        {"Sid": "OnlyOpen", "Effect": "Deny", "Principal": "*", "Resource": res,
         "Action": "s3:PutObject",
         "Condition": {"StringNotEquals": {"s3:ExistingObjectTag/class": "x"},
                       "StringEqualsIfExists": {"s3:ExistingObjectTag/y": "1"}}}))
    for i in range(6):
        with pytest.raises(ClientError):  # the negated Deny refuses every PUT
            a.put_object(Bucket=bucket, Key=f"k{i}", Body=b"1")
    lines = [json.loads(line) for line in log.read_bytes()[mark:].splitlines()
             if line.startswith(b"{")]
    warned = [e for e in lines if f"bucket {bucket}: policy" in e["msg"]]
    cfg = tomllib.loads((cluster.data / "tessera.toml").read_text())
    processes = cfg.get("gateway", {}).get("workers") or os.cpu_count() or 1
    assert 1 <= len(warned) <= min(processes, 5), warned  # not once per request (6)
    assert all(e["level"] == "warning" and "'KeepClosed' denies s3:DeleteObject if "
               "s3:ExistingObjectTag/class" in e["msg"] for e in warned), warned
    assert not any("OnlyOpen" in e["msg"] for e in lines)


@pytest.mark.parametrize("header,value,condition", [
    ("x-amz-acl", "public-read", {"StringEquals": {"s3:x-amz-acl": "public-read"}}),
    ("x-amz-grant-read", "id=x", {"StringEquals": {"s3:x-amz-grant-read": "id=x"}}),
    ("x-amz-storage-class", "GLACIER",
     {"StringEquals": {"s3:x-amz-storage-class": "GLACIER"}}),
    ("x-amz-metadata-directive", "REPLACE",
     {"StringEquals": {"s3:x-amz-metadata-directive": "REPLACE"}}),
    ("x-amz-tagging", "t=v", {"StringEquals": {"s3:RequestObjectTag/t": "v"}}),
])
def test_a_header_the_action_ignores_is_no_condition_key(
        w: dict[str, Any], header: str, value: str, condition: dict[str, Any]) -> None:
    """s3low22: AWS lists these keys for s3:PutObject (ACL ones also for the ACL actions),
    never for s3:GetObject. A GET carrying the header (which it ignores) earned an Allow
    conditioned on it; now the key is absent there, so the Allow does not hold."""
    a, b = w["a"], w["b"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="k", Body=b"1")
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Allow", "Principal": {"AWS": w["name_b"]}, "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*", "Condition": condition}))

    def add(request: Any, **_: Any) -> None:
        request.headers[header] = value

    b.meta.events.register("before-sign.s3.GetObject", add)
    try:
        assert refusal(lambda: b.get_object(Bucket=bucket, Key="k")) == (403, "AccessDenied")
    finally:
        b.meta.events.unregister("before-sign.s3.GetObject", add)
