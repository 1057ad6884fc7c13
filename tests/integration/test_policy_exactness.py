"""Bucket policies mean exactly what AWS defines, across tenants: DeleteObjects is
authorized key by key, the policy operations stay with the bucket's account, and what Block
Public Access counts as a public policy."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from tests.integration.cluster import LocalCluster
from tests.integration.tenant_pair import new_bucket, policy, refusal, two_tenants


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    """Owner tenant `a` and another tenant `b`, each with its own canonical id."""
    return two_tenants(cluster, "pe")


def _blocking_public_policies(w: dict[str, Any]) -> str:
    """A new bucket of `a` whose Block Public Access refuses public policies."""
    bucket = new_bucket(w)
    w["a"].put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicPolicy": True})
    return bucket


def _keys(c: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_delete_objects_obeys_a_deny_on_some_keys(w: dict[str, Any]) -> None:
    a = w["a"]
    bucket = new_bucket(w)
    for k in ("keep/x", "free/y"):
        a.put_object(Bucket=bucket, Key=k, Body=b"1")
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
        "Resource": f"arn:aws:s3:::{bucket}/keep/*"}))
    r = a.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "keep/x"},
                                                            {"Key": "free/y"}]})
    assert [d["Key"] for d in r.get("Deleted", [])] == ["free/y"]
    assert [(e["Key"], e["Code"]) for e in r.get("Errors", [])] == [("keep/x", "AccessDenied")]
    assert _keys(a, bucket) == {"keep/x"}


def test_delete_objects_grants_by_key_to_another_tenant(w: dict[str, Any]) -> None:
    a, b = w["a"], w["b"]
    bucket = new_bucket(w)
    for k in ("pub/x", "priv/y"):
        a.put_object(Bucket=bucket, Key=k, Body=b"1")
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Allow", "Principal": {"AWS": w["name_b"]}, "Action": "s3:DeleteObject",
        "Resource": f"arn:aws:s3:::{bucket}/pub/*"}))
    r = b.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "pub/x"},
                                                            {"Key": "priv/y"}]})
    assert [d["Key"] for d in r.get("Deleted", [])] == ["pub/x"]
    assert [(e["Key"], e["Code"]) for e in r.get("Errors", [])] == [("priv/y", "AccessDenied")]
    assert _keys(a, bucket) == {"priv/y"}


@pytest.mark.parametrize("op", ["put", "get", "delete"])
def test_policy_operations_stay_with_the_bucket_account(w: dict[str, Any], op: str) -> None:
    a, b = w["a"], w["b"]
    bucket = new_bucket(w)
    text = policy({"Effect": "Allow", "Principal": {"AWS": w["name_b"]},
                  "Action": "s3:*", "Resource": [f"arn:aws:s3:::{bucket}",
                                                 f"arn:aws:s3:::{bucket}/*"]})
    a.put_bucket_policy(Bucket=bucket, Policy=text)
    calls = {"put": lambda: b.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Allow", "Principal": "*", "Action": "s3:*",
        "Resource": f"arn:aws:s3:::{bucket}/*"})),
        "get": lambda: b.get_bucket_policy(Bucket=bucket),
        "delete": lambda: b.delete_bucket_policy(Bucket=bucket)}
    assert refusal(calls[op]) == (405, "MethodNotAllowed")
    with pytest.raises(ClientError) as ei:  # AWS's body names the policy (filestack-js#55)
        calls[op]()
    err = ei.value.response["Error"]
    assert (err.get("Method"), err.get("ResourceType")) == (
        {"put": "PUT", "get": "GET", "delete": "DELETE"}[op], "BUCKETPOLICY")
    assert json.loads(a.get_bucket_policy(Bucket=bucket)["Policy"]) == json.loads(text)


@pytest.mark.parametrize("condition", [
    {"NotIpAddress": {"aws:SourceIp": "10.9.9.9/32"}},
    {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}},
    {"IpAddress": {"aws:SourceIp": "64.0.0.0/2"}},
    {"StringLike": {"aws:PrincipalAccount": "*"}},
    {"StringNotEquals": {"aws:PrincipalAccount": "nobody"}},
    {"StringEqualsIfExists": {"aws:SourceAccount": "x"}},
    {"StringLike": {"aws:userid": "*:*"}},  # mend17p: only a fixed role id's sessions pin
    {"StringLike": {"aws:userid": "AROA*:*"}},
    # any caller can name the owner's KMS key and have it used (no kms:Encrypt check): no pin
    {"StringEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id":
                      "arn:aws:kms:us-east-1:123456789012:key/k1"}},
])
def test_unpinned_conditions_leave_a_policy_public(w: dict[str, Any],
                                                   condition: dict[str, Any]) -> None:
    a = w["a"]
    bucket = _blocking_public_policies(w)
    text = policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                  "Resource": f"arn:aws:s3:::{bucket}/*", "Condition": condition})
    assert refusal(lambda: a.put_bucket_policy(Bucket=bucket, Policy=text)) == (
        403, "AccessDenied")


@pytest.mark.parametrize("condition", [
    {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}},
    {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"StringEquals": {"aws:SourceAccount": "123456789012"}},
    {"StringEquals": {"aws:PrincipalAccount": "123456789012"}},  # review17e
    {"ArnEquals": {"aws:SourceArn": "arn:aws:cloudfront::123456789012:distribution/E1"}},
    # mend17p: AWS's list also names these (a role's sessions "AROLEID:*" included)
    {"StringLike": {"aws:userid": "AROAEXAMPLEID123:*"}},
    {"StringEquals": {"aws:SourceVpce": "vpce-1a2b3c4d"}},
    {"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}},
])
def test_pinned_conditions_make_a_policy_non_public(w: dict[str, Any],
                                                    condition: dict[str, Any]) -> None:
    a = w["a"]
    bucket = _blocking_public_policies(w)
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*", "Condition": condition}))
    assert a.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is False


@pytest.mark.parametrize("field,condition", [
    ("acl", {"StringEquals": {"s3:x-amz-acl": "public-read"}}),
    ("x-amz-storage-class", {"StringEquals": {"s3:x-amz-storage-class": "STANDARD_IA"}}),
])
def test_post_form_fields_are_the_condition_keys(w: dict[str, Any], field: str,
                                                 condition: dict[str, Any]) -> None:
    """A POST upload's form fields are its request's condition keys (AWS): a policy that
    denies an ACL or storage class denies it in a form as in a PUT header."""
    a = w["a"]
    bucket = new_bucket(w)
    value = list(condition.values())[0]
    value = str(list(value.values())[0])
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*", "Condition": condition}))
    assert refusal(lambda: a.put_object(Bucket=bucket, Key="put", Body=b"x", **(
        {"ACL": value} if field == "acl" else {"StorageClass": value}))) == (403, "AccessDenied")
    form = a.generate_presigned_post(bucket, "post", Fields={field: value},
                                     Conditions=[{field: value}])
    r = requests.post(form["url"], data=form["fields"], files={"file": ("f", b"x")},
                      timeout=60)
    assert r.status_code == 403, r.text
    assert "<Code>AccessDenied</Code>" in r.text
    assert _keys(a, bucket) == set()


def test_a_caller_denied_listing_is_not_told_a_key_is_missing(w: dict[str, Any]) -> None:
    """403, not 404, for a missing key to whom s3:ListBucket is denied: the bucket's tenant
    and a tenant the bucket ACL grants READ alike (AWS: 404 needs s3:ListBucket)."""
    a, b = w["a"], w["b"]
    bucket = new_bucket(w)
    a.put_bucket_acl(Bucket=bucket, GrantFullControl=f"id={'a' * 56 + w['tag']}",
                     GrantRead=f"id={'b' * 56 + w['tag']}")
    a.put_object(Bucket=bucket, Key="there", Body=b"1")
    assert refusal(lambda: b.get_object(Bucket=bucket, Key="gone")) == (404, "NoSuchKey")
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*", "Action": "s3:ListBucket",
        "Resource": f"arn:aws:s3:::{bucket}"}))
    for c in (a, b):
        assert refusal(lambda c=c: c.get_object(Bucket=bucket, Key="gone")) == (
            403, "AccessDenied")
        assert refusal(lambda c=c: c.head_object(Bucket=bucket, Key="gone"))[0] == 403
    assert a.get_object(Bucket=bucket, Key="there")["Body"].read() == b"1"


def test_restrict_public_buckets_leaves_only_the_bucket_account(w: dict[str, Any]) -> None:
    """RestrictPublicBuckets on a bucket with a public policy: another tenant named in the
    policy, and a public-read object, are closed to everyone but the bucket's tenant (AWS:
    "including non-public delegation to specific accounts, is blocked")."""
    a, b = w["a"], w["b"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="open", Body=b"1", ACL="public-read")
    a.put_object(Bucket=bucket, Key="named", Body=b"2")
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Allow", "Principal": {"AWS": w["name_b"]}, "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/named"}, {
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/nothing-here"}))
    for key in ("open", "named"):
        assert b.get_object(Bucket=bucket, Key=key)["Body"].read()
    a.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "RestrictPublicBuckets": True})
    for key in ("open", "named"):
        assert refusal(lambda key=key: b.get_object(Bucket=bucket, Key=key)) == (
            403, "AccessDenied")
        assert a.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_action_names_are_case_insensitive(w: dict[str, Any]) -> None:
    """IAM action names, service prefix included, match in any case (AWS)."""
    a, b = w["a"], w["b"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="k", Body=b"1")
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Allow", "Principal": {"AWS": w["name_b"]}, "Action": "S3:getobject",
        "Resource": f"arn:aws:s3:::{bucket}/*"}))
    assert b.get_object(Bucket=bucket, Key="k")["Body"].read() == b"1"


def test_an_action_s3_does_not_define_is_refused(w: dict[str, Any]) -> None:
    """s3low22: a typo'd action was stored and its Deny applied to nothing; AWS refuses it
    with MalformedPolicy "Policy has invalid action" (gateway/s3/policy_actions.py)."""
    a = w["a"]
    bucket = new_bucket(w)
    st = {"Effect": "Deny", "Principal": "*", "Resource": f"arn:aws:s3:::{bucket}/*"}
    for bad in ("s3:GetObjekt", ["s3:GetObject", "iam:PassRole"], "s3:Gett*"):
        with pytest.raises(ClientError) as e:
            a.put_bucket_policy(Bucket=bucket, Policy=policy({**st, "Action": bad}))
        assert (e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]) == (
            "MalformedPolicy", "Policy has invalid action")
    with pytest.raises(ClientError):
        a.get_bucket_policy(Bucket=bucket)  # nothing stored
    a.put_bucket_policy(Bucket=bucket, Policy=policy({**st, "Action": ["s3:Get*",
                                                                       "s3:PutObjectAcl"]}))


@pytest.mark.parametrize("where", ["Resource", "Condition"])
def test_policy_variables_are_refused_not_taken_literally(w: dict[str, Any],
                                                          where: str) -> None:
    """A 2012-10-17 policy's `${aws:username}` is a variable AWS substitutes; the gateway
    does not evaluate variables, so it refuses the policy (MalformedPolicy) rather than
    match the literal text; in a 2008-10-17 policy the text is literal, as on AWS."""
    a = w["a"]
    bucket = new_bucket(w)
    st = {"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket",
          "Resource": f"arn:aws:s3:::{bucket}"}
    if where == "Resource":
        st = {**st, "Action": "s3:GetObject",
              "Resource": f"arn:aws:s3:::{bucket}/home/${{aws:username}}/*"}
    else:
        st["Condition"] = {"StringLike": {"s3:prefix": "home/${aws:username}/*"}}
    assert refusal(lambda: a.put_bucket_policy(Bucket=bucket, Policy=policy(st))) == (
        400, "MalformedPolicy")
    a.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2008-10-17",
                                                         "Statement": [st]}))


def test_a_directive_is_applied_only_in_the_case_a_condition_reads(w: dict[str, Any]) -> None:
    """atkpolicy21: a Deny of s3:PutObject when s3:x-amz-metadata-directive is REPLACE held
    for "REPLACE" while "replace" (upper-cased by the copy) replaced the metadata: a
    directive is COPY or REPLACE exactly (as MinIO reads it), else InvalidArgument, so the
    value a condition judges is the one applied."""
    a = w["a"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="k", Body=b"1", Metadata={"m": "kept"})
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
        "Condition": {"StringEquals": {"s3:x-amz-metadata-directive": "REPLACE"}}}))

    def copy(directive: str) -> Any:
        return a.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k"},
                             MetadataDirective=directive, Metadata={"m": "replaced"})

    def message(fn: Any) -> str:
        with pytest.raises(ClientError) as ei:
            fn()
        return str(ei.value.response["Error"]["Message"])

    assert refusal(lambda: copy("REPLACE")) == (403, "AccessDenied")
    assert refusal(lambda: copy("replace")) == (400, "InvalidArgument")
    # AWS's text (review21e L2: "Unknown metadata-directive directive." was answered)
    assert message(lambda: copy("replace")) == "Unknown metadata directive."
    def tag_copy() -> Any:
        return a.copy_object(Bucket=bucket, Key="k2", TaggingDirective="copy",
                             CopySource={"Bucket": bucket, "Key": "k"})

    assert refusal(tag_copy) == (400, "InvalidArgument")
    assert message(tag_copy) == "Unknown tagging directive."
    assert a.head_object(Bucket=bucket, Key="k")["Metadata"] == {"m": "kept"}
