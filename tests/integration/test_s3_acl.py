"""S3 access control across tenants: ACLs (canned, grant headers, XML), object ownership,
public access block, and bucket policies with conditions, with boto3 and plain HTTP."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError

from ops.admincli import admin_request
from tests.integration.cluster import LocalCluster, fetch, wait_for
from tests.integration.tenant_pair import new_bucket, refusal

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def _client(cluster: LocalCluster, name: str, cid: str):  # type: ignore[no-untyped-def]
    return cluster.tenant_client(name, {"canonical_id": cid, "display_name": name.upper(),
                                        "email": f"{name}@example.com"})


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    """Owner tenant `a`, another tenant `b`, each with its own canonical id."""
    tag = uuid.uuid4().hex[:8]
    ida, idb = "a" * 56 + tag, "b" * 56 + tag
    return {"a": _client(cluster, f"acl-a-{tag}", ida), "b": _client(cluster, f"acl-b-{tag}", idb),
            "ida": ida, "idb": idb, "prefix": "acl", "tag": tag, "n": 0, "endpoint": cluster.endpoint}


def _anon(url: str, method: str = "GET", data: bytes | None = None) -> int:
    return fetch(url, method, data)[0]


def _grants(resp: dict[str, Any]) -> set[tuple[str, str]]:
    return {(g["Grantee"].get("ID") or g["Grantee"].get("URI"), g["Permission"])
            for g in resp["Grants"]}


def test_canned_acls_apply_and_are_reported(w: dict[str, Any]) -> None:
    a, b = w["a"], w["b"]
    bucket = new_bucket(w, ACL="public-read")
    acl = a.get_bucket_acl(Bucket=bucket)
    assert acl["Owner"] == {"ID": w["ida"], "DisplayName": a_name(w)}
    assert _grants(acl) == {(ALL_USERS, "READ"), (w["ida"], "FULL_CONTROL")}
    a.put_object(Bucket=bucket, Key="pub", Body=b"p", ACL="public-read")
    a.put_object(Bucket=bucket, Key="priv", Body=b"s")
    base = f"{w['endpoint']}/{bucket}"
    assert _anon(f"{base}/pub") == 200
    assert _anon(f"{base}/priv") == 403
    assert _anon(f"{base}?list-type=2") == 200  # bucket READ lists
    assert _anon(f"{base}/new", "PUT", b"x") == 403  # no WRITE
    assert b.get_object(Bucket=bucket, Key="pub")["Body"].read() == b"p"
    assert refusal(lambda: b.get_object(Bucket=bucket, Key="priv"))[0] == 403
    assert refusal(lambda: b.put_object(Bucket=bucket, Key="x", Body=b"x"))[0] == 403
    # back to private: the public grants are gone, and so is the access
    a.put_bucket_acl(Bucket=bucket, ACL="private")
    a.put_object_acl(Bucket=bucket, Key="pub", ACL="private")
    assert _grants(a.get_object_acl(Bucket=bucket, Key="pub")) == {(w["ida"], "FULL_CONTROL")}
    assert _anon(f"{base}/pub") == 403
    assert refusal(lambda: b.list_objects_v2(Bucket=bucket))[0] == 403


def a_name(w: dict[str, Any]) -> str:
    return f"ACL-A-{w['tag']}".upper()


def test_authenticated_read_and_public_write(w: dict[str, Any]) -> None:
    a, b = w["a"], w["b"]
    bucket = new_bucket(w, ACL="authenticated-read")
    base = f"{w['endpoint']}/{bucket}"
    assert b.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert _anon(f"{base}?list-type=2") == 403
    a.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    b.put_object(Bucket=bucket, Key="from-b", Body=b"b")  # WRITE: another tenant writes
    # b owns what it wrote; the bucket's tenant needs b's grant to read its ACL
    assert b.get_object_acl(Bucket=bucket, Key="from-b")["Owner"]["ID"] == w["idb"]
    assert refusal(lambda: a.get_object_acl(Bucket=bucket, Key="from-b"))[0] == 403
    # ... and to read the object itself (AWS: only the object's ACL grants reads of it)
    assert refusal(lambda: a.get_object(Bucket=bucket, Key="from-b")) == (403, "AccessDenied")
    assert refusal(lambda: a.head_object(Bucket=bucket, Key="from-b"))[0] == 403
    a.put_object(Bucket=bucket, Key="own", Body=b"o")   # its own objects stay readable
    assert a.get_object(Bucket=bucket, Key="own")["Body"].read() == b"o"
    b.put_object(Bucket=bucket, Key="readable", Body=b"r", ACL="bucket-owner-read")
    assert a.get_object(Bucket=bucket, Key="readable")["Body"].read() == b"r"
    b.put_object(Bucket=bucket, Key="shared", Body=b"s", ACL="bucket-owner-full-control")
    assert _grants(a.get_object_acl(Bucket=bucket, Key="shared")) == {
        (w["idb"], "FULL_CONTROL"), (w["ida"], "FULL_CONTROL")}
    assert _anon(f"{base}/anon", "PUT", b"x") == 200
    assert a.get_object(Bucket=bucket, Key="shared")["Body"].read() == b"s"
    a.delete_objects(Bucket=bucket, Delete={"Objects": [  # the bucket's tenant may delete them
        {"Key": k} for k in ("from-b", "shared", "anon", "own", "readable")]})
    assert b.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_presigned_expiry_out_of_range_is_403(w: dict[str, Any]) -> None:
    """X-Amz-Expires over a week or negative: never valid, 403 with AWS's message."""
    a = w["a"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="k", Body=b"k")
    creds = a._request_signer._credentials
    for expires, says in ((609901, b"less than a week"), (-7, b"must be non-negative")):
        # botocore's own SigV4 query signer (boto3's CRT presigner refuses negative expiries)
        req = AWSRequest("GET", f"{w['endpoint']}/{bucket}/k")
        S3SigV4QueryAuth(creds, "s3", "us-east-1", expires=expires).add_auth(req)
        status, body = fetch(req.url)
        assert status == 403 and b"AuthorizationQueryParametersError" in body and says in body
    url = a.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"},
                                   ExpiresIn=604800)
    assert fetch(url) == (200, b"k")


def test_explicit_grants_by_header_and_xml(w: dict[str, Any]) -> None:
    a, b = w["a"], w["b"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="k", Body=b"v", GrantRead=f'id="{w["idb"]}"')
    assert _grants(a.get_object_acl(Bucket=bucket, Key="k")) == {(w["idb"], "READ")}
    assert b.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    assert refusal(lambda: b.get_object_acl(Bucket=bucket, Key="k"))[0] == 403
    policy = {"Owner": {"ID": w["ida"]}, "Grants": [
        {"Grantee": {"ID": w["ida"], "Type": "CanonicalUser"}, "Permission": "FULL_CONTROL"},
        {"Grantee": {"EmailAddress": f"acl-b-{w['tag']}@example.com",
                     "Type": "AmazonCustomerByEmail"}, "Permission": "WRITE"}]}
    a.put_bucket_acl(Bucket=bucket, AccessControlPolicy=policy)
    assert _grants(a.get_bucket_acl(Bucket=bucket)) == {(w["ida"], "FULL_CONTROL"),
                                                         (w["idb"], "WRITE")}
    b.put_object(Bucket=bucket, Key="w", Body=b"w")
    assert refusal(lambda: b.list_objects_v2(Bucket=bucket))[0] == 403
    # errors: unknown id, unknown email, canned plus grants, unknown canned ACL
    bad = {"Owner": {"ID": w["ida"]}, "Grants": [
        {"Grantee": {"ID": "nobody" + w["tag"], "Type": "CanonicalUser"},
         "Permission": "READ"}]}
    assert refusal(lambda: a.put_bucket_acl(Bucket=bucket, AccessControlPolicy=bad)) == (
        400, "InvalidArgument")
    bad["Grants"][0]["Grantee"] = {"EmailAddress": "no@where.invalid",
                                   "Type": "AmazonCustomerByEmail"}
    assert refusal(lambda: a.put_bucket_acl(Bucket=bucket, AccessControlPolicy=bad)) == (
        400, "UnresolvableGrantByEmailAddress")
    assert refusal(lambda: a.put_object(Bucket=bucket, Key="x", ACL="public-read",
                                        GrantRead=f"id={w['idb']}")) == (400, "InvalidRequest")
    assert refusal(lambda: a.put_object(Bucket=bucket, Key="x", ACL="public-ready"))[0] == 400


def test_ownership_controls_and_public_access_block(w: dict[str, Any]) -> None:
    a, b = w["a"], w["b"]
    bucket = new_bucket(w, ObjectOwnership="BucketOwnerEnforced")
    assert a.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]
    assert refusal(lambda: a.put_bucket_acl(Bucket=bucket, ACL="public-read")) == (
        400, "AccessControlListNotSupported")
    assert refusal(lambda: a.put_object(Bucket=bucket, Key="k", ACL="public-read")) == (
        400, "AccessControlListNotSupported")
    a.put_object(Bucket=bucket, Key="k", ACL="bucket-owner-full-control")
    a.delete_bucket_ownership_controls(Bucket=bucket)
    assert refusal(lambda: a.get_bucket_ownership_controls(Bucket=bucket)) == (
        404, "OwnershipControlsNotFoundError")
    a.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": False, "BlockPublicPolicy": True,
        "RestrictPublicBuckets": False})
    assert refusal(lambda: a.put_object(Bucket=bucket, Key="p", ACL="public-read"))[0] == 403
    public = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*"}]})
    assert refusal(lambda: a.put_bucket_policy(Bucket=bucket, Policy=public))[0] == 403
    a.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "RestrictPublicBuckets": True})
    a.put_bucket_policy(Bucket=bucket, Policy=public)
    assert a.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is False
    assert refusal(lambda: b.get_object(Bucket=bucket, Key="k"))[0] == 403
    a.delete_public_access_block(Bucket=bucket)
    assert a.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is True
    assert b.get_object(Bucket=bucket, Key="k")["Body"].read() == b""


def test_policy_principals_and_conditions(w: dict[str, Any]) -> None:
    a, b = w["a"], w["b"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="doc", Body=b"d", Tagging="class=open")
    a.put_object(Bucket=bucket, Key="secret", Body=b"s", Tagging="class=closed")
    res = f"arn:aws:s3:::{bucket}/*"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{w['idb']}:root"},
         "Action": ["s3:GetObject", "s3:PutObject"], "Resource": res},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": res,
         "Condition": {"StringEquals": {"s3:ExistingObjectTag/class": "closed"}}},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": res,
         "Condition": {"StringNotEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}}},
    ]}
    a.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    assert b.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"d"
    assert refusal(lambda: b.get_object(Bucket=bucket, Key="secret"))[0] == 403
    # the Deny's condition holds only without the ACL header; the owner is bound too
    assert refusal(lambda: b.put_object(Bucket=bucket, Key="n", Body=b"n"))[0] == 403
    b.put_object(Bucket=bucket, Key="n", Body=b"n", ACL="bucket-owner-full-control")
    assert a.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"d"
    assert refusal(lambda: a.get_object(Bucket=bucket, Key="secret"))[0] == 403
    assert _anon(f"{w['endpoint']}/{bucket}/doc") == 403  # names b only
    for bad in ({"StringEquals": {"s3:no-such-key": "x"}},
                {"StringFancy": {"aws:Referer": "x"}}):
        doc = {"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                              "Resource": res, "Condition": bad}]}
        assert refusal(lambda d=doc: a.put_bucket_policy(Bucket=bucket, Policy=json.dumps(d))
                       ) == (400, "MalformedPolicy")
    doc = {"Statement": [{"Effect": "Allow", "NotPrincipal": {"AWS": "x"}, "Action": "s3:*",
                          "Resource": res}]}
    assert refusal(lambda: a.put_bucket_policy(Bucket=bucket, Policy=json.dumps(doc))) == (
        400, "MalformedPolicy")
    assert json.loads(a.get_bucket_policy(Bucket=bucket)["Policy"]) == policy


def test_tenant_identity_in_owner_fields(w: dict[str, Any]) -> None:
    a = w["a"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="k", Body=b"v")
    owner = {"ID": w["ida"], "DisplayName": a_name(w)}
    assert a.list_buckets()["Owner"] == owner
    assert a.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"][0]["Owner"] == owner


def _raw_status(endpoint: str, request: bytes) -> bytes:
    import socket

    host, port = endpoint.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        return s.recv(1024).split(b" ", 2)[1]


def test_expect_100_continue_only_after_authorization(w: dict[str, Any]) -> None:
    bucket = new_bucket(w)
    req = (f"PUT /{bucket}/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
           "Expect: 100-continue\r\n\r\n").encode()
    assert _raw_status(w["endpoint"], req) == b"403"  # refused before the body is sent
    w["a"].put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    assert _raw_status(w["endpoint"], req) == b"100"
    other = req.replace(b"100-continue", b"200")  # values S3 does not know are ignored
    assert _raw_status(w["endpoint"], other.replace(b"Content-Length: 5", b"Content-Length: 0")
                       ) == b"200"


def test_expected_bucket_owner(w: dict[str, Any]) -> None:
    a, b = w["a"], w["b"]
    bucket = new_bucket(w, ACL="public-read")
    a.list_objects_v2(Bucket=bucket, ExpectedBucketOwner=w["ida"])
    assert refusal(lambda: a.list_objects_v2(Bucket=bucket, ExpectedBucketOwner=w["idb"])) == (
        403, "AccessDenied")
    b.list_objects_v2(Bucket=bucket, ExpectedBucketOwner=w["ida"])
    assert refusal(lambda: b.list_objects_v2(Bucket=bucket, ExpectedBucketOwner=w["idb"]))[0] == 403


def test_expected_source_bucket_owner_within_one_bucket(w: dict[str, Any]) -> None:
    """A copy inside one bucket checks x-amz-source-expected-bucket-owner for its source and
    x-amz-expected-bucket-owner for its destination (the source's header was ignored when
    both buckets were the same)."""
    a = w["a"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="src", Body=b"s")
    src = {"Bucket": bucket, "Key": "src"}
    assert refusal(lambda: a.copy_object(Bucket=bucket, Key="dst", CopySource=src,
                                         ExpectedSourceBucketOwner=w["idb"])) == (403, "AccessDenied")
    assert refusal(lambda: a.copy_object(Bucket=bucket, Key="dst", CopySource=src,
                                         ExpectedBucketOwner=w["idb"],
                                         ExpectedSourceBucketOwner=w["ida"])) == (403, "AccessDenied")
    a.copy_object(Bucket=bucket, Key="dst", CopySource=src, ExpectedBucketOwner=w["ida"],
                  ExpectedSourceBucketOwner=w["ida"])
    up = a.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    assert refusal(lambda: a.upload_part_copy(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1,
                                              CopySource=src, ExpectedSourceBucketOwner=w["idb"])
                 ) == (403, "AccessDenied")
    a.upload_part_copy(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, CopySource=src,
                       ExpectedSourceBucketOwner=w["ida"])
    a.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=up)


def test_tenant_level_public_access_block(cluster: LocalCluster, w: dict[str, Any]) -> None:
    """Each gateway worker caches a tenant's flags for a few seconds (as on AWS, a change
    propagates rather than applying at once), so the checks poll until it has."""
    a = w["a"]
    bucket = new_bucket(w)
    name = f"acl-a-{w['tag']}"
    flags = {"BlockPublicAcls": True, "BlockPublicPolicy": True}
    public = json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*",
                                        "Action": "s3:GetObject",
                                        "Resource": f"arn:aws:s3:::{bucket}/*"}]})

    def refused(fn: Any) -> bool:
        try:
            fn()
        except ClientError as exc:
            return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        return False

    view = admin_request("PATCH", f"/tenants/{name}", {"public_access_block": flags},
                         env=cluster.env)
    assert view["public_access_block"] == flags
    try:
        wait_for(lambda: refused(lambda: a.put_bucket_acl(Bucket=bucket, ACL="public-read")),
                 "a public ACL refused", 30)
        wait_for(lambda: refused(lambda: a.put_bucket_policy(Bucket=bucket, Policy=public)),
                 "a public policy refused", 30)
    finally:
        admin_request("PATCH", f"/tenants/{name}", {"public_access_block": {}},
                      env=cluster.env)
        a.delete_bucket_policy(Bucket=bucket)  # a worker not yet told may have taken it
    wait_for(lambda: not refused(lambda: a.put_bucket_acl(Bucket=bucket, ACL="public-read")),
             "a public ACL accepted again", 30)
