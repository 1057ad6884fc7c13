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
from botocore.config import Config as BotoConfig

from tests.integration.cluster import LocalCluster


@pytest.fixture(scope="module")
def s3(cluster: LocalCluster) -> dict[str, Any]:
    env = cluster.env
    client = boto3.client("s3", endpoint_url=cluster.endpoint,
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                          region_name="us-east-1",
                          config=BotoConfig(signature_version="s3v4",
                                            retries={"max_attempts": 1}))
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
