"""Browser POST uploads (multipart/form-data) with boto3's SigV4 presigned POST, a SigV2
form, policy conditions and the success_action_* answers, over plain HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import boto3
import pytest
import requests

from ops.botoconfig import no_retries
from tests.integration.cluster import LocalCluster


@pytest.fixture(scope="module")
def s3(cluster: LocalCluster) -> dict[str, Any]:
    env = cluster.env
    client = boto3.client("s3", endpoint_url=cluster.endpoint,
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                          region_name="us-east-1",
                          config=no_retries(signature_version="s3v4"))
    bucket = f"post-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    return {"c": client, "b": bucket, "url": f"{cluster.endpoint}/{bucket}",
            "ak": env["AWS_ACCESS_KEY_ID"], "sk": env["AWS_SECRET_ACCESS_KEY"]}


def _v2_form(s3: dict[str, Any], conditions: list[Any], **fields: str) -> dict[str, Any]:
    doc = {"expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600)),
           "conditions": [{"bucket": s3["b"]}, *conditions]}
    policy = base64.b64encode(json.dumps(doc).encode())
    sig = base64.b64encode(hmac.new(s3["sk"].encode(), policy, hashlib.sha1).digest())
    return {"AWSAccessKeyId": s3["ak"], "policy": policy.decode(), "signature": sig.decode(),
            **fields}


def _post(s3: dict[str, Any], fields: dict[str, Any], data: bytes = b"hello",
          **kw: Any) -> requests.Response:
    return requests.post(s3["url"], data=fields, files={"file": ("f.txt", data)},
                         timeout=30, **kw)


def test_sigv4_presigned_post_from_boto3(s3: dict[str, Any]) -> None:
    post = s3["c"].generate_presigned_post(
        s3["b"], "up/${filename}", Fields={"x-amz-meta-who": "browser"},
        Conditions=[["starts-with", "$key", "up/"], {"x-amz-meta-who": "browser"},
                    ["content-length-range", 1, 100]], ExpiresIn=600)
    r = requests.post(post["url"], data=post["fields"], files={"file": ("f.txt", b"hello")},
                      timeout=30)
    assert r.status_code == 204, r.text
    obj = s3["c"].get_object(Bucket=s3["b"], Key="up/f.txt")
    assert obj["Body"].read() == b"hello"
    assert obj["Metadata"] == {"who": "browser"}
    assert r.headers["ETag"] == obj["ETag"]
    # the same form, a file over the policy's size range
    r = requests.post(post["url"], data=post["fields"], files={"file": ("g", b"x" * 101)},
                      timeout=30)
    assert r.status_code == 400 and b"EntityTooLarge" in r.content


def test_sigv2_form_conditions_and_answers(s3: dict[str, Any]) -> None:
    conds = [["starts-with", "$key", "v2/"], {"acl": "private"},
             ["eq", "$success_action_status", "201"], ["starts-with", "$Content-Type", "text/"]]
    fields = _v2_form(s3, conds, key="v2/a", acl="private", success_action_status="201")
    fields["Content-Type"] = "text/plain"
    r = _post(s3, fields)
    assert r.status_code == 201, r.text
    assert b"<Key>v2/a</Key>" in r.content and b"<Bucket>" in r.content
    head = s3["c"].head_object(Bucket=s3["b"], Key="v2/a")
    assert head["ContentType"] == "text/plain"
    # refused: wrong key prefix, a field no condition covers, a bad signature, no policy
    assert _post(s3, {**fields, "key": "other"}).status_code == 403
    assert _post(s3, {**fields, "x-amz-meta-extra": "1"}).status_code == 403
    assert _post(s3, {**fields, "signature": "AAAA"}).status_code == 403
    anon = {"key": "v2/anon"}
    assert _post(s3, anon).status_code == 403  # anonymous, and the bucket is private
    # a redirect names the new object
    conds = [["starts-with", "$key", "v2/"], ["starts-with", "$success_action_redirect", ""]]
    fields = _v2_form(s3, conds, key="v2/r", success_action_redirect="http://example.com/ok")
    r = _post(s3, fields, allow_redirects=False)
    assert r.status_code == 303
    assert r.headers["Location"].startswith("http://example.com/ok?bucket=")
    assert "key=v2%2Fr" in r.headers["Location"]


def test_post_answers_the_objects_absolute_url(s3: dict[str, Any]) -> None:
    """The 201 document's Location and the Location header are the new object's absolute
    URL, as S3 answers (minio#1477 and localstack#1302 quote S3's PostResponse; AWS's POST
    example shows https://bucket.s3.amazonaws.com/key): a browser script links the upload
    with it. It was a path, which a page on another origin resolves against itself."""
    fields = _v2_form(s3, [["starts-with", "$key", "loc/"],
                           ["eq", "$success_action_status", "201"]],
                      key="loc/a b+c", success_action_status="201")
    r = _post(s3, fields)
    assert r.status_code == 201, r.text
    want = f"{s3['url']}/loc/a%20b%2Bc"
    assert f"<Location>{want}</Location>".encode() in r.content
    assert r.headers["Location"] == want
    assert requests.get(want, timeout=30).status_code == 403  # the URL names it (private)
    assert s3["c"].get_object(Bucket=s3["b"], Key="loc/a b+c")["Body"].read() == b"hello"
    fields = _v2_form(s3, [["starts-with", "$key", "loc/"]], key="loc/d")
    r = _post(s3, fields)
    assert r.status_code == 204 and r.headers["Location"] == f"{s3['url']}/loc/d"


def test_expired_or_malformed_policies(s3: dict[str, Any]) -> None:
    fields = _v2_form(s3, [["starts-with", "$key", ""]], key="k")
    doc = json.loads(base64.b64decode(fields["policy"]))
    for change, status in (({"expiration": "2001-01-01T00:00:00Z"}, 403),
                           ({"expiration": "tomorrow"}, 400), ({"conditions": None}, 400)):
        policy = base64.b64encode(json.dumps({**doc, **change}).encode())
        sig = base64.b64encode(hmac.new(s3["sk"].encode(), policy, hashlib.sha1).digest())
        r = _post(s3, {**fields, "policy": policy.decode(), "signature": sig.decode()})
        assert r.status_code == status, (change, r.text)
    r = requests.post(s3["url"], data={"key": "k"}, timeout=30)  # not multipart
    assert r.status_code == 400


def _form_for(s3: dict[str, Any], bucket: str, **fields: str) -> dict[str, Any]:
    """A SigV2 form for `bucket` whose policy covers every field given (exact values)."""
    conds = [{k: v} for k, v in fields.items() if not k.startswith("x-amz-checksum-")]
    return _v2_form({**s3, "b": bucket}, conds, **fields)


def _post_to(s3: dict[str, Any], bucket: str, fields: dict[str, Any],
             data: bytes = b"hello") -> requests.Response:
    return requests.post(s3["url"].rsplit("/", 1)[0] + "/" + bucket, data=fields,
                         files={"file": ("f.txt", data)}, timeout=30)


def test_post_object_lock_fields_are_applied(s3: dict[str, Any]) -> None:
    """x-amz-object-lock-* form fields lock the new version as PutObject's headers do, with
    PutObject's checks (a digest required, a lock-enabled bucket, valid values)."""
    c, b = s3["c"], f"postlock-{uuid.uuid4().hex[:8]}"
    c.create_bucket(Bucket=b, ObjectLockEnabledForBucket=True)
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    md5 = base64.b64encode(hashlib.md5(b"hello").digest()).decode()
    lock = {"x-amz-object-lock-mode": "GOVERNANCE",
            "x-amz-object-lock-retain-until-date": until,
            "x-amz-object-lock-legal-hold": "ON"}
    r = _post_to(s3, b, _form_for(s3, b, key="locked", **{"Content-MD5": md5}, **lock))
    assert r.status_code == 204, r.text
    vid = r.headers["x-amz-version-id"]
    ret = c.get_object_retention(Bucket=b, Key="locked")["Retention"]
    assert ret["Mode"] == "GOVERNANCE"
    assert ret["RetainUntilDate"].strftime("%Y-%m-%dT%H:%M:%SZ") == until
    assert c.get_object_legal_hold(Bucket=b, Key="locked")["LegalHold"]["Status"] == "ON"
    # refused, nothing stored: no digest; a bad mode; a mode without a date; no lock bucket
    r = _post_to(s3, b, _form_for(s3, b, key="nodigest", **lock))
    assert r.status_code == 400 and b"InvalidRequest" in r.content, r.text
    bad = {**lock, "x-amz-object-lock-mode": "FOREVER"}
    r = _post_to(s3, b, _form_for(s3, b, key="badmode", **{"Content-MD5": md5}, **bad))
    assert r.status_code == 400 and b"InvalidArgument" in r.content, r.text
    r = _post_to(s3, b, _form_for(s3, b, key="half", **{
        "Content-MD5": md5, "x-amz-object-lock-mode": "GOVERNANCE"}))
    assert r.status_code == 400 and b"InvalidArgument" in r.content, r.text
    r = _post_to(s3, s3["b"], _form_for(s3, s3["b"], key="nolock", **{"Content-MD5": md5},
                                        **lock))
    assert r.status_code == 400 and b"InvalidRequest" in r.content, r.text
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=b).get("Contents", [])]
    assert keys == ["locked"]
    c.put_object_legal_hold(Bucket=b, Key="locked", LegalHold={"Status": "OFF"})
    c.delete_object(Bucket=b, Key="locked", VersionId=vid, BypassGovernanceRetention=True)


def test_post_checksum_algorithm_field_is_checked(s3: dict[str, Any]) -> None:
    """x-amz-checksum-algorithm is checked against the x-amz-checksum-* field as PutObject
    checks x-amz-sdk-checksum-algorithm: alone, unknown or naming another algorithm is 400."""
    c, b = s3["c"], s3["b"]
    sha = base64.b64encode(hashlib.sha256(b"hello").digest()).decode()
    for key, extra in (("alg-alone", {"x-amz-checksum-algorithm": "SHA256"}),
                       ("alg-other", {"x-amz-checksum-algorithm": "CRC32",
                                      "x-amz-checksum-sha256": sha}),
                       ("alg-bogus", {"x-amz-checksum-algorithm": "MD4"})):
        r = _post_to(s3, b, _form_for(s3, b, key=key, **extra))
        assert r.status_code == 400 and b"InvalidRequest" in r.content, (key, r.text)
        with pytest.raises(c.exceptions.ClientError):
            c.head_object(Bucket=b, Key=key)
    r = _post_to(s3, b, _form_for(s3, b, key="alg-ok", **{
        "x-amz-checksum-algorithm": "SHA256", "x-amz-checksum-sha256": sha}))
    assert r.status_code == 204, r.text
    head = c.head_object(Bucket=b, Key="alg-ok", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha
