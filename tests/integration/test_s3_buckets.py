"""Bucket configuration (CORS, policy, encryption, lifecycle, ACL), object tagging, batch
delete and listing, through boto3 and raw HTTP against a real cluster."""

from __future__ import annotations

import json

import pytest
import requests
from botocore.exceptions import ClientError


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    r = exc.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]


@pytest.fixture
def bucket(s3, request) -> str:
    name = "cfg-" + request.node.name.replace("_", "-")[:50].lower()
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            s3.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])
    s3.delete_bucket(Bucket=name)


CORS = {"CORSRules": [
    {"ID": "site", "AllowedOrigins": ["https://example.com", "https://*.example.org"],
     "AllowedMethods": ["GET", "PUT"], "AllowedHeaders": ["Content-Type", "x-amz-*"],
     "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3000},
    {"AllowedOrigins": ["*"], "AllowedMethods": ["HEAD"]},
]}


def test_cors_roundtrip_and_validation(s3, bucket) -> None:
    with pytest.raises(ClientError) as e:
        s3.get_bucket_cors(Bucket=bucket)
    assert _code(e) == (404, "NoSuchCORSConfiguration")
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=CORS)
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == CORS["CORSRules"]
    bad = {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]}
    with pytest.raises(ClientError) as e:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=bad)
    assert _code(e) == (400, "InvalidRequest")
    too_many = {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}] * 101}
    with pytest.raises(ClientError) as e:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=too_many)
    assert _code(e) == (400, "MalformedXML")
    s3.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_cors(Bucket=bucket)
    assert _code(e) == (404, "NoSuchCORSConfiguration")


def test_cors_preflight_and_actual(cluster, s3, bucket) -> None:
    url = f"{cluster.endpoint}/{bucket}/some/key"
    pre = {"Origin": "https://example.com", "Access-Control-Request-Method": "PUT"}
    r = requests.options(url, headers=pre, timeout=10)
    assert r.status_code == 403
    assert "CORS is not enabled for this bucket" in r.text
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=CORS)
    r = requests.options(url, headers={**pre, "Access-Control-Request-Headers": "Content-Type"},
                         timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "https://example.com"
    assert r.headers["Access-Control-Allow-Methods"] == "GET, PUT"
    assert r.headers["Access-Control-Allow-Headers"] == "content-type"
    assert r.headers["Access-Control-Max-Age"] == "3000"
    assert r.headers["Access-Control-Expose-Headers"] == "ETag"
    assert "x-amz-request-id" in r.headers
    r = requests.options(url, headers={"Origin": "https://a.example.org",
                                       "Access-Control-Request-Method": "GET"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://a.example.org"
    r = requests.options(url, headers={"Origin": "https://evil.com",
                                       "Access-Control-Request-Method": "PUT"}, timeout=10)
    assert r.status_code == 403
    assert "<Code>AccessForbidden</Code>" in r.text
    assert "CORSResponse: This CORS request is not allowed." in r.text
    r = requests.options(url, headers={"Origin": "https://x.com",
                                       "Access-Control-Request-Method": "HEAD"}, timeout=10)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    r = requests.options(url, headers={**pre, "Access-Control-Request-Headers": "authorization"},
                         timeout=10)
    assert r.status_code == 403
    r = requests.options(url, headers={"Access-Control-Request-Method": "GET"}, timeout=10)
    assert r.status_code == 400 and "<Code>BadRequest</Code>" in r.text
    # An actual request with Origin gets the CORS headers (even when presigned, anonymous).
    s3.put_object(Bucket=bucket, Key="some/key", Body=b"x")
    signer = cluster.client(signature_version="s3v4")
    signed = signer.generate_presigned_url("get_object", Params={"Bucket": bucket,
                                                                 "Key": "some/key"})
    r = requests.get(signed, headers={"Origin": "https://example.com"}, timeout=10)
    assert r.status_code == 200 and r.content == b"x", r.text
    assert r.headers["Access-Control-Allow-Origin"] == "https://example.com"
    r = requests.get(signed, headers={"Origin": "https://evil.com"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_policy(s3, bucket) -> None:
    with pytest.raises(ClientError) as e:
        s3.get_bucket_policy(Bucket=bucket)
    assert _code(e) == (404, "NoSuchBucketPolicy")
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*"}]})
    s3.put_bucket_policy(Bucket=bucket, Policy=policy)
    assert json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]) == json.loads(policy)
    for bad in ("not json", json.dumps({"Version": "2012-10-17"}),
                json.dumps({"Statement": [{"Effect": "Maybe"}]}), "{" + " " * 21000 + "}"):
        with pytest.raises(ClientError) as e:
            s3.put_bucket_policy(Bucket=bucket, Policy=bad)
        assert _code(e) == (400, "MalformedPolicy")
    s3.delete_bucket_policy(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_policy(Bucket=bucket)
    assert _code(e) == (404, "NoSuchBucketPolicy")


def test_encryption(s3, bucket) -> None:
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert rule["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    conf = {"Rules": [{"ApplyServerSideEncryptionByDefault": {
        "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "tenant-key"}, "BucketKeyEnabled": True}]}
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=conf)
    got = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert got == conf
    with pytest.raises(ClientError) as e:
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "DES"}}]})
    assert _code(e) == (400, "MalformedXML")
    s3.delete_bucket_encryption(Bucket=bucket)
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert rule["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


LIFECYCLE = {"Rules": [
    {"ID": "logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
     "Expiration": {"Days": 30},
     "Transitions": [{"Days": 7, "StorageClass": "GLACIER"}],
     "NoncurrentVersionExpiration": {"NoncurrentDays": 10},
     "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}},
    {"ID": "tagged", "Status": "Disabled",
     "Filter": {"And": {"Prefix": "a/", "Tags": [{"Key": "k", "Value": "v"}]}},
     "NoncurrentVersionTransitions": [{"NoncurrentDays": 3, "StorageClass": "DEEP_ARCHIVE"}]},
]}


def test_lifecycle(cluster, s3, bucket) -> None:
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert _code(e) == (404, "NoSuchLifecycleConfiguration")
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=LIFECYCLE)
    got = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert got == LIFECYCLE["Rules"]
    bad_rules = [
        ({"ID": "x" * 256, "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 1}},
         "InvalidArgument"),
        ({"ID": "a", "Status": "On", "Filter": {}, "Expiration": {"Days": 1}}, "MalformedXML"),
        ({"ID": "a", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 0}},
         "InvalidArgument"),
        ({"ID": "a", "Status": "Enabled", "Filter": {}}, "InvalidRequest"),
    ]
    for rule, code in bad_rules:
        with pytest.raises(ClientError) as e:
            s3.put_bucket_lifecycle_configuration(Bucket=bucket,
                                                  LifecycleConfiguration={"Rules": [rule]})
        assert _code(e) == (400, code), rule
    s3.delete_bucket_lifecycle(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert _code(e) == (404, "NoSuchLifecycleConfiguration")


def test_acl(s3, bucket) -> None:
    acl = s3.get_bucket_acl(Bucket=bucket)
    assert [g["Permission"] for g in acl["Grants"]] == ["FULL_CONTROL"]
    assert acl["Grants"][0]["Grantee"]["ID"] == acl["Owner"]["ID"]
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")   # accepted means applied
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"} in [
        {k: v for k, v in g["Grantee"].items() if k in ("Type", "URI")}
        for g in grants if g["Permission"] == "READ"]
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    assert [g["Permission"] for g in s3.get_bucket_acl(Bucket=bucket)["Grants"]] == [
        "FULL_CONTROL"]
    with pytest.raises(ClientError) as e:
        s3.put_bucket_acl(Bucket=bucket, ACL="public-ready")   # not a canned ACL
    assert _code(e) == (400, "InvalidArgument")
    s3.put_object(Bucket=bucket, Key="k", Body=b"1")
    assert s3.get_object_acl(Bucket=bucket, Key="k")["Grants"][0]["Permission"] == "FULL_CONTROL"
    s3.put_object_acl(Bucket=bucket, Key="k", ACL="private")
    s3.put_object_acl(Bucket=bucket, Key="k", AccessControlPolicy={
        "Owner": acl["Owner"], "Grants": acl["Grants"]})
    with pytest.raises(ClientError) as e:
        s3.get_object_acl(Bucket=bucket, Key="missing")
    assert _code(e) == (404, "NoSuchKey")


def test_object_tagging(s3, bucket) -> None:
    s3.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="a=1&b=two%20words")
    head = s3.head_object(Bucket=bucket, Key="t")
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"
    tags = s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"a": "1", "b": "two words"}
    s3.put_object_tagging(Bucket=bucket, Key="t",
                          Tagging={"TagSet": [{"Key": "c", "Value": "3"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [{"Key": "c",
                                                                          "Value": "3"}]
    assert s3.get_object(Bucket=bucket, Key="t")["Body"].read() == b"x"
    s3.delete_object_tagging(Bucket=bucket, Key="t")
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == []
    with pytest.raises(ClientError) as e:
        s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": [
            {"Key": f"k{i}", "Value": "v"} for i in range(11)]})
    assert _code(e) == (400, "InvalidTag")
    with pytest.raises(ClientError) as e:
        s3.get_object_tagging(Bucket=bucket, Key="nope")
    assert _code(e) == (404, "NoSuchKey")
    # Versioned: each version has its own tags.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="v", Body=b"1", Tagging="gen=1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="v", Body=b"2")["VersionId"]
    s3.put_object_tagging(Bucket=bucket, Key="v", VersionId=v1,
                          Tagging={"TagSet": [{"Key": "gen", "Value": "one"}]})
    got = s3.get_object_tagging(Bucket=bucket, Key="v", VersionId=v1)
    assert got["TagSet"] == [{"Key": "gen", "Value": "one"}] and got["VersionId"] == v1
    assert s3.get_object_tagging(Bucket=bucket, Key="v")["TagSet"] == []
    assert s3.get_object_tagging(Bucket=bucket, Key="v")["VersionId"] == v2


def test_delete_objects(cluster, s3, bucket) -> None:
    keys = [f"d/{i:04d}" for i in range(30)]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    res = s3.delete_objects(Bucket=bucket, Delete={
        "Objects": [{"Key": k} for k in keys[:20]] + [{"Key": "never-existed"}]})
    assert sorted(d["Key"] for d in res["Deleted"]) == sorted([*keys[:20], "never-existed"])
    assert not res.get("Errors")
    res = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[20:]],
                                                   "Quiet": True})
    assert "Deleted" not in res and not res.get("Errors")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    with pytest.raises(ClientError) as e:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}] * 1001})
    assert _code(e) == (400, "MalformedXML")
    # Versioned: delete markers, then delete exact versions.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    vid = s3.put_object(Bucket=bucket, Key="v", Body=b"1")["VersionId"]
    res = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "v"}]})
    marker = res["Deleted"][0]
    assert marker["DeleteMarker"] is True and marker["DeleteMarkerVersionId"]
    res = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "v", "VersionId": vid},
        {"Key": "v", "VersionId": marker["DeleteMarkerVersionId"]}]})
    by_vid = {d["VersionId"]: d for d in res["Deleted"]}
    assert by_vid[marker["DeleteMarkerVersionId"]]["DeleteMarker"] is True
    assert vid in by_vid
    assert "Versions" not in s3.list_object_versions(Bucket=bucket)


def test_delete_objects_requires_digest(cluster, bucket) -> None:
    """Raw, signed without Content-MD5 or a checksum: AWS refuses it."""
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    body = b"<Delete><Object><Key>a</Key></Object></Delete>"
    url = f"{cluster.endpoint}/{bucket}?delete"
    creds = botocore.session.Session().create_client(
        "s3", region_name=cluster.env["AWS_DEFAULT_REGION"],
        aws_access_key_id=cluster.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=cluster.env["AWS_SECRET_ACCESS_KEY"])._request_signer._credentials
    req = AWSRequest("POST", url, data=body, headers={"Content-Length": str(len(body))})
    req.headers["x-amz-content-sha256"] = __import__("hashlib").sha256(body).hexdigest()
    SigV4Auth(creds, "s3", cluster.env["AWS_DEFAULT_REGION"]).add_auth(req)
    r = requests.post(url, data=body, headers=dict(req.headers), timeout=10)
    assert r.status_code == 400, r.text
    assert "<Code>InvalidRequest</Code>" in r.text and "Content-Md5" in r.text


def test_listing_paths(s3, bucket) -> None:
    keys = sorted({f"{a}/{b}/{c:02d}" for a in ("x", "y", "z") for b in ("p", "q", "r")
                   for c in range(25)} | {f"top{i:03d}" for i in range(25)} | {"sp ace+plus"})
    assert len(keys) > 250
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"")
    got, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, MaxKeys=37, **kw)
        got += [o["Key"] for o in page.get("Contents", [])]
        assert page["KeyCount"] == len(page.get("Contents", []))
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert got == keys
    page = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["x/", "y/", "z/"]
    assert [o["Key"] for o in page["Contents"]] == [k for k in keys if "/" not in k]
    page = s3.list_objects_v2(Bucket=bucket, Prefix="y/", Delimiter="/", MaxKeys=2)
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["y/p/", "y/q/"]
    assert page["IsTruncated"]
    page = s3.list_objects_v2(Bucket=bucket, Prefix="y/", Delimiter="/",
                              ContinuationToken=page["NextContinuationToken"])
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["y/r/"] and not page["IsTruncated"]
    page = s3.list_objects_v2(Bucket=bucket, StartAfter="z/r/20", FetchOwner=True)
    assert [o["Key"] for o in page["Contents"]][:2] == ["z/r/21", "z/r/22"]
    assert "Owner" in page["Contents"][0]
    assert "Owner" not in s3.list_objects_v2(Bucket=bucket, MaxKeys=1)["Contents"][0]
    page = s3.list_objects_v2(Bucket=bucket, Prefix="sp", EncodingType="url")
    assert page["Contents"][0]["Key"] == "sp%20ace%2Bplus"  # boto3 leaves it encoded
    assert page["EncodingType"] == "url"
    # v1 with marker / NextMarker.
    got, marker = [], ""
    while True:
        page = s3.list_objects(Bucket=bucket, Marker=marker, MaxKeys=50, Delimiter="/")
        got += [o["Key"] for o in page.get("Contents", [])]
        got += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            break
        marker = page["NextMarker"]
    assert sorted(got) == sorted(["x/", "y/", "z/", *[k for k in keys if "/" not in k]])
    got, marker = [], ""
    while True:
        page = s3.list_objects(Bucket=bucket, Marker=marker, MaxKeys=100)
        got += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        marker = got[-1]
    assert got == keys
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
