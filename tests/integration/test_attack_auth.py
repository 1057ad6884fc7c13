"""An attacker with a tenant's key against authentication and tenancy (real gateway and
nodes): a request carrying two signatures, upload ids used under another bucket or key,
signed XML bodies altered in flight, and a node request sent to a node it was not signed
for."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request
from typing import Any

import boto3
import pytest
import requests
from botocore.auth import HmacV1Auth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials

from gateway.s3.sigv4_sign import sign_headers
from ops.botoconfig import no_retries
from storage.shards.auth import sign
from tests.integration.cluster import LocalCluster
from tests.integration.tenant_pair import new_bucket, policy, refusal, two_tenants

ONE_MECHANISM = ("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                 "Signature query string parameter or the Authorization header should be "
                 "specified")


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    return two_tenants(cluster, "atkauth")


def _keys(client: Any) -> tuple[str, str]:
    creds = client._request_signer._credentials
    return creds.access_key, creds.secret_key


def _v2_header(url: str, ak: str, sk: str) -> dict[str, str]:
    req = AWSRequest(method="GET", url=url)
    HmacV1Auth(Credentials(ak, sk)).add_auth(req)
    return dict(req.headers.items())


def _presigned_query(client: Any, bucket: str, version: str) -> str:
    ak, sk = _keys(client)
    c = boto3.client("s3", endpoint_url=client.meta.endpoint_url, aws_access_key_id=ak,
                     aws_secret_access_key=sk, region_name="us-east-1",
                     config=BotoConfig(signature_version=version))
    url = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"},
                                   ExpiresIn=300)
    return url.split("?", 1)[1]


@pytest.mark.parametrize("mix", ["v4-header+v4-query", "v2-header+v4-query",
                                 "v2-header+v2-query", "v4-header+v2-query",
                                 "v2-query+v4-query"])
def test_a_request_signed_two_ways_is_invalid_argument(w: dict[str, Any], mix: str) -> None:
    """Each signature alone is valid; together only one was checked and the other ignored
    (a SigV2 header with a V4 presigned query was served). AWS: 400 InvalidArgument."""
    a = w["a"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="k", Body=b"x")
    ak, sk = _keys(a)
    path = f"{w['endpoint']}/{bucket}/k"
    first, second = mix.split("+")
    query = "&".join(_presigned_query(a, bucket, "s3v4" if part == "v4-query" else "s3")
                     for part in (first, second) if part.endswith("query"))
    url = f"{path}?{query}"
    headers: dict[str, str] = {}
    if first == "v4-header":
        headers = sign_headers("GET", url, {}, b"", ak, sk)
    elif first == "v2-header":
        headers = _v2_header(url, ak, sk)
    r = requests.get(url, headers=headers, timeout=30)
    assert r.status_code == 400, (r.status_code, r.text)
    assert "<Code>InvalidArgument</Code>" in r.text, r.text
    assert f"<Message>{ONE_MECHANISM}</Message>" in r.text, r.text
    if headers:
        assert "<ArgumentName>Authorization</ArgumentName>" in r.text, r.text


def test_an_upload_id_names_only_its_own_bucket_and_key(w: dict[str, Any]) -> None:
    """Tenant b may write `public/*` in a's bucket (a policy grant); a's upload of
    `secret/y` stays a's: b's part, listing, completion or abort under another key or its
    own bucket find no such upload, and a's part is untouched."""
    a, b = w["a"], w["b"]
    bucket = new_bucket(w)
    own = new_bucket(w)
    a.put_bucket_policy(Bucket=own, Policy=policy({
        "Effect": "Allow", "Principal": {"AWS": "b" * 56 + w["tag"]}, "Action": "s3:*",
        "Resource": f"arn:aws:s3:::{own}/*"}))
    a.put_bucket_policy(Bucket=bucket, Policy=policy({
        "Effect": "Allow", "Principal": {"AWS": "b" * 56 + w["tag"]},
        "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
        "Resource": f"arn:aws:s3:::{bucket}/public/*"}))
    up = a.create_multipart_upload(Bucket=bucket, Key="secret/y")["UploadId"]
    etag = a.upload_part(Bucket=bucket, Key="secret/y", UploadId=up, PartNumber=1,
                         Body=b"TOPSECRET")["ETag"]
    b.put_object(Bucket=bucket, Key="public/ok", Body=b"granted")  # the grant works
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    calls = (("list_parts", {}), ("upload_part", {"PartNumber": 2, "Body": b"planted"}),
             ("complete_multipart_upload", {"MultipartUpload": parts}),
             ("abort_multipart_upload", {}))
    for where, key in ((bucket, "public/x"), (own, "secret/y")):
        for name, kw in calls:
            got = refusal(lambda: getattr(b, name)(Bucket=where, Key=key, UploadId=up, **kw))  # noqa: B023
            assert got == (404, "NoSuchUpload"), (where, name, got)
    listed = a.list_parts(Bucket=bucket, Key="secret/y", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["ETag"]) for p in listed] == [(1, etag)]
    assert refusal(lambda: b.get_object(Bucket=bucket, Key="public/x")) == (403, "AccessDenied")


def test_signed_xml_bodies_altered_in_flight_change_nothing(w: dict[str, Any]) -> None:
    """A body that is not the one signed (x-amz-content-sha256) is refused before it is
    applied: tagging, DeleteObjects (with a Content-MD5 matching the altered body) and a
    multipart completion."""
    a = w["a"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="keep", Body=b"x")
    ak, sk = _keys(a)

    def altered(method: str, path: str, signed: bytes, sent: bytes,
                extra: dict[str, str] | None = None) -> requests.Response:
        url = f"{w['endpoint']}{path}"
        headers = sign_headers(method, url, extra or {}, signed, ak, sk)
        return requests.request(method, url, headers=headers, data=sent, timeout=30)

    tags = b"<Tagging><TagSet><Tag><Key>a</Key><Value>%s</Value></Tag></TagSet></Tagging>"
    r = altered("PUT", f"/{bucket}/keep?tagging", tags % b"b", tags % b"c")
    assert r.status_code == 400 and "<Code>XAmzContentSHA256Mismatch</Code>" in r.text
    assert a.get_object_tagging(Bucket=bucket, Key="keep")["TagSet"] == []

    keep, other = (b"<Delete><Object><Key>%s</Key></Object></Delete>" % k
                   for k in (b"nothing", b"keep"))
    md5 = base64.b64encode(hashlib.md5(other).digest()).decode()
    r = altered("POST", f"/{bucket}?delete", keep, other, {"Content-MD5": md5})
    assert r.status_code == 400 and "<Code>XAmzContentSHA256Mismatch</Code>" in r.text
    assert a.head_object(Bucket=bucket, Key="keep")["ContentLength"] == 1

    up = a.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = a.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1,
                         Body=b"p")["ETag"]
    done = (f"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag>"
            f"</Part></CompleteMultipartUpload>").encode()
    r = altered("POST", f"/{bucket}/mp?uploadId={up}", done, done + b" ")
    assert r.status_code == 400 and "<Code>XAmzContentSHA256Mismatch</Code>" in r.text
    assert len(a.list_parts(Bucket=bucket, Key="mp", UploadId=up)["Parts"]) == 1


def test_a_node_request_signed_for_one_node_is_refused_by_another(
        cluster: LocalCluster) -> None:
    """The node MAC covers the target node's id: a request captured on its way to n1 and
    sent to n2 is refused, while n1 takes it (each signed anew: nonces are single-use)."""
    n1, secret = cluster._node_access("n1") or ("", b"")
    n2, _ = cluster._node_access("n2") or ("", b"")
    path = "/v1/shards?limit=1"

    def status(url: str) -> tuple[int, str]:
        req = urllib.request.Request(url + path, headers=sign(secret, "GET", path, "n1"))
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, ""
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())["message"]

    assert status(n1) == (200, "")
    assert status(n2) == (401, "bad signature")


class _UnsignedPayload(S3SigV4Auth):
    """botocore's SigV4 header signer, signing UNSIGNED-PAYLOAD in place of the body hash."""

    def payload(self, request: Any) -> str:
        return "UNSIGNED-PAYLOAD"


def _admin_keys(cluster: LocalCluster, tenant: str) -> set[str]:
    from ops.admincli import admin_request

    listed = admin_request("GET", "/keys", None, env=cluster.env)["keys"]
    return {k["access_key_id"] for k in listed if k["tenant"] == tenant}


def test_admin_requests_take_no_presigned_url_and_no_unsigned_body(
        cluster: LocalCluster, w: dict[str, Any]) -> None:
    """An admin presigned URL lasted a week, replayed, and signed no body: a `POST /keys`
    URL minted keys for whichever tenant its holder named. UNSIGNED-PAYLOAD let whoever
    relayed a header-signed admin request pick its body. Both are refused now."""
    env = cluster.env
    ak, sk = env["TESSERA_ADMIN_ACCESS_KEY"], env["TESSERA_ADMIN_SECRET_KEY"]
    url = env["TESSERA_ADMIN_URL"].rstrip("/") + "/admin/v1/keys"
    before = _admin_keys(cluster, w["name_b"])

    req = AWSRequest(method="POST", url=url)
    S3SigV4QueryAuth(Credentials(ak, sk), "s3", "us-east-1", expires=604800).add_auth(req)
    r = requests.post(req.url, json={"tenant": w["name_b"]}, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "AccessDenied", r.text
    req = AWSRequest(method="GET", url=url)
    S3SigV4QueryAuth(Credentials(ak, sk), "s3", "us-east-1", expires=60).add_auth(req)
    assert requests.get(req.url, timeout=30).status_code == 403

    body = json.dumps({"tenant": w["name_b"]}).encode()
    req = AWSRequest(method="POST", url=url, data=body,
                     headers={"Content-Type": "application/json"})
    _UnsignedPayload(Credentials(ak, sk), "s3", "us-east-1").add_auth(req)
    assert req.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    r = requests.post(url, data=body, headers=dict(req.headers.items()), timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidRequest", r.text
    assert _admin_keys(cluster, w["name_b"]) == before

    headers = sign_headers("POST", url, {"Content-Type": "application/json"}, body, ak, sk)
    r = requests.post(url, data=body, headers=headers, timeout=30)  # signed body: served
    assert r.status_code == 201, r.text
    assert _admin_keys(cluster, w["name_b"]) == before | {r.json()["access_key_id"]}


def test_a_session_token_is_invalid_token_not_ignored(w: dict[str, Any]) -> None:
    """This service issues no temporary credentials; a request carrying a session token
    (header, presigned query or POST form field) with a tenant's long-term key was served
    as if the token were not there. AWS answers it 400 InvalidToken."""
    a = w["a"]
    bucket = new_bucket(w)
    a.put_object(Bucket=bucket, Key="k", Body=b"x")
    ak, sk = _keys(a)
    for version in ("s3v4", "s3"):
        c = boto3.client("s3", endpoint_url=w["endpoint"], aws_access_key_id=ak,
                         aws_secret_access_key=sk, aws_session_token="not-a-token",
                         region_name="us-east-1",
                         config=no_retries(signature_version=version))
        assert refusal(lambda c=c: c.get_object(Bucket=bucket, Key="k")) == (
            400, "InvalidToken")
        assert refusal(lambda c=c: c.put_object(Bucket=bucket, Key="t", Body=b"y")) == (
            400, "InvalidToken")
        url = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
        r = requests.get(url, timeout=30)
        assert r.status_code == 400 and "<Code>InvalidToken</Code>" in r.text, (version, url)
        assert "<Token-0>not-a-token</Token-0>" in r.text, r.text  # as AWS echoes it
    form = a.generate_presigned_post(bucket, "posted", Fields={"x-amz-security-token": "t"},
                                     Conditions=[{"x-amz-security-token": "t"}])
    r = requests.post(form["url"], data=form["fields"], files={"file": b"z"}, timeout=30)
    assert r.status_code == 400 and "<Code>InvalidToken</Code>" in r.text, r.text
    assert "<Token-0>t</Token-0>" in r.text, r.text
    listed = a.list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["k"]


def test_an_empty_session_token_is_no_token(w: dict[str, Any]) -> None:
    """boto3 puts an empty x-amz-security-token field in a presigned POST made with
    aws_session_token="" (`is not None`, where its header signer tests truthiness): an empty
    token names no temporary credentials (MinIO treats it as absent) and the form was
    served before the token refusal; it must stay served, and so must an empty header."""
    a = w["a"]
    bucket = new_bucket(w)
    ak, sk = _keys(a)
    c = boto3.Session(aws_access_key_id=ak, aws_secret_access_key=sk,
                      aws_session_token="").client("s3", endpoint_url=w["endpoint"],
                                                   region_name="us-east-1")
    form = c.generate_presigned_post(bucket, "posted")
    assert form["fields"]["x-amz-security-token"] == ""
    r = requests.post(form["url"], data=form["fields"], files={"file": b"z"}, timeout=30)
    assert r.status_code == 204, r.text
    url = f"{w['endpoint']}/{bucket}/posted"
    r = requests.get(url, headers=sign_headers("GET", url, {"x-amz-security-token": ""}, b"",
                                               ak, sk), timeout=30)
    assert (r.status_code, r.content) == (200, b"z"), r.text


def test_a_credential_scoped_to_another_region_is_refused(w: dict[str, Any],
                                                          cluster: LocalCluster) -> None:
    """A signature whose credential scope names another region than the endpoint's was
    served (the scope was accepted and ignored). AWS answers 400 with the region to sign
    for in <Region>: AuthorizationHeaderMalformed for a header, and
    AuthorizationQueryParametersError for a presigned URL."""
    bucket = new_bucket(w)
    ak, sk = _keys(w["a"])
    ours = cluster.env["AWS_DEFAULT_REGION"]
    other = "eu-west-3" if ours != "eu-west-3" else "us-west-2"
    c = boto3.client("s3", endpoint_url=w["endpoint"], aws_access_key_id=ak,
                     aws_secret_access_key=sk, region_name=other,
                     config=no_retries(signature_version="s3v4"))
    url = f"{w['endpoint']}/{bucket}"
    r = requests.get(url, headers=sign_headers("GET", url, {}, b"", ak, sk, region=other),
                     timeout=30)
    assert r.status_code == 400, r.text
    assert "<Code>AuthorizationHeaderMalformed</Code>" in r.text, r.text
    assert (f"<Message>The authorization header is malformed; the region '{other}' is "
            f"wrong; expecting '{ours}'</Message>") in r.text, r.text
    assert f"<Region>{ours}</Region>" in r.text, r.text
    r = requests.get(c.generate_presigned_url("list_objects_v2", Params={"Bucket": bucket}),
                     timeout=30)
    assert r.status_code == 400, r.text
    assert "<Code>AuthorizationQueryParametersError</Code>" in r.text, r.text
    assert f"<Region>{ours}</Region>" in r.text, r.text
    r = requests.get(url, headers=sign_headers("GET", url, {}, b"", ak, sk, region=ours),
                     timeout=30)
    assert r.status_code == 200, r.text


def test_an_sdk_signing_for_another_region_is_sent_to_the_gateways(w: dict[str, Any],
                                                                   cluster: LocalCluster
                                                                   ) -> None:
    """boto3 (and the aws CLI) signing for another region re-sign for the region S3 names:
    from <Region> in an error body, and for HEAD (no body) only from x-amz-bucket-region,
    which AWS sends with the refusal. Without the header HeadObject/HeadBucket were a bare
    400 (so `aws s3 cp s3://b/k .` failed) where AWS serves them after one redirect."""
    bucket = new_bucket(w)
    w["a"].put_object(Bucket=bucket, Key="k", Body=b"x")
    ak, sk = _keys(w["a"])
    ours = cluster.env["AWS_DEFAULT_REGION"]
    other = "eu-west-3" if ours != "eu-west-3" else "us-west-2"
    for op in ("head_object", "head_bucket"):
        c = boto3.client("s3", endpoint_url=w["endpoint"], aws_access_key_id=ak,
                         aws_secret_access_key=sk, region_name=other, config=no_retries())
        r = (c.head_object(Bucket=bucket, Key="k") if op == "head_object"
             else c.head_bucket(Bucket=bucket))
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 200, (op, r)
    url = f"{w['endpoint']}/{bucket}/k"
    r = requests.head(url, headers=sign_headers("HEAD", url, {}, b"", ak, sk, region=other),
                      timeout=30)
    assert (r.status_code, r.headers.get("x-amz-bucket-region")) == (400, ours), r.headers


def test_a_form_signed_for_another_region_is_refused(w: dict[str, Any],
                                                     cluster: LocalCluster) -> None:
    """A browser POST form whose x-amz-credential names another region was stored (the
    header and presigned checks do not cover forms). AWS: 400 InvalidArgument naming
    X-Amz-Credential, with <Region> (CulturalMe/meteor-slingshot#150)."""
    bucket = new_bucket(w)
    ak, sk = _keys(w["a"])
    ours = cluster.env["AWS_DEFAULT_REGION"]
    other = "eu-west-3" if ours != "eu-west-3" else "us-west-2"
    c = boto3.client("s3", endpoint_url=w["endpoint"], aws_access_key_id=ak,
                     aws_secret_access_key=sk, region_name=other)
    form = c.generate_presigned_post(bucket, "posted")
    r = requests.post(form["url"], data=form["fields"], files={"file": b"z"}, timeout=30)
    assert r.status_code == 400, r.text
    assert (f"<Code>InvalidArgument</Code><Message>the region '{other}' is wrong; expecting "
            f"'{ours}'</Message><ArgumentName>X-Amz-Credential</ArgumentName><ArgumentValue>"
            f"{form['fields']['x-amz-credential']}</ArgumentValue><Region>{ours}</Region>"
            ) in r.text, r.text
    assert "Contents" not in w["a"].list_objects_v2(Bucket=bucket)
