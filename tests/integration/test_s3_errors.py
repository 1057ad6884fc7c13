"""S3 error responses as AWS documents them: HTTP status, error code, x-amz-request-id."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

B = "errors-table"


@pytest.fixture(scope="module")
def setup(cluster):
    s3 = cluster.client()
    s3.create_bucket(Bucket=B)
    s3.put_object(Bucket=B, Key="obj", Body=b"0123456789")
    s3.create_bucket(Bucket=B + "-full")
    s3.put_object(Bucket=B + "-full", Key="x", Body=b"x")
    yield s3


class _SignedAt(SigV4Auth):
    """SigV4 as of a given time: X-Amz-Date, the string to sign and the credential scope all
    carry it (botocore's add_auth always stamps "now", which crosses midnight badly)."""

    def __init__(self, creds: Credentials, region: str, when: dt.datetime) -> None:
        super().__init__(creds, "s3", region)
        self._stamp = when.strftime("%Y%m%dT%H%M%SZ")

    def add_auth(self, request: AWSRequest) -> None:
        request.context["timestamp"] = self._stamp
        del request.headers["X-Amz-Date"]
        request.headers["X-Amz-Date"] = self._stamp
        canonical = self.canonical_request(request)
        signature = self.signature(self.string_to_sign(request, canonical), request)
        self._inject_signature_to_request(request, signature)


def _signed(cluster, method: str, path: str, *, body: bytes = b"",
            headers: dict[str, str] | None = None, secret: str | None = None,
            access: str | None = None, when: dt.datetime | None = None) -> requests.Response:
    url = cluster.endpoint + path
    creds = Credentials(access or cluster.env["AWS_ACCESS_KEY_ID"],
                        secret or cluster.env["AWS_SECRET_ACCESS_KEY"])
    req = AWSRequest(method, url, data=body, headers=dict(headers or {}))
    req.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    region = cluster.env["AWS_DEFAULT_REGION"]
    signer = SigV4Auth(creds, "s3", region) if when is None else _SignedAt(creds, region, when)
    signer.add_auth(req)
    return requests.request(method, url, data=body or None, headers=dict(req.headers),
                            timeout=10)


def _boto(call: Callable[[], object]) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as e:
        call()
    r = e.value.response
    meta = r["ResponseMetadata"]
    return meta["HTTPStatusCode"], r["Error"]["Code"], meta["HTTPHeaders"].get(
        "x-amz-request-id", "")


def _code(r: requests.Response) -> str:
    if "<Code>" not in r.text:
        return ""
    return r.text.split("<Code>", 1)[1].split("</Code>", 1)[0]


CASES: list[tuple[str, Callable, int, str]] = [
    ("NoSuchBucket", lambda s3: s3.get_object(Bucket="no-such-bucket-x", Key="k"), 404,
     "NoSuchBucket"),
    ("NoSuchKey", lambda s3: s3.get_object(Bucket=B, Key="missing"), 404, "NoSuchKey"),
    ("NoSuchVersion", lambda s3: s3.get_object(Bucket=B, Key="obj", VersionId="A" * 32), 404,
     "NoSuchVersion"),
    # A version id that no version could have is malformed, as S3 answers it (it was 404).
    ("InvalidArgument", lambda s3: s3.get_object(Bucket=B, Key="obj", VersionId="nope"), 400,
     "InvalidArgument"),
    ("BucketNotEmpty", lambda s3: s3.delete_bucket(Bucket=B + "-full"), 409, "BucketNotEmpty"),
    ("InvalidBucketName", lambda s3: s3.create_bucket(Bucket="Bad_Name"), 400,
     "InvalidBucketName"),
    ("KeyTooLongError", lambda s3: s3.put_object(Bucket=B, Key="k" * 1025, Body=b""), 400,
     "KeyTooLongError"),
    ("MalformedXML", lambda s3: s3.put_bucket_versioning(
        Bucket=B, VersioningConfiguration={"Status": "Sideways"}), 400, "MalformedXML"),
    ("InvalidArgument", lambda s3: s3.list_objects(Bucket=B, MaxKeys=-1), 400,
     "InvalidArgument"),
    ("InvalidRange", lambda s3: s3.get_object(Bucket=B, Key="obj", Range="bytes=100-200"), 416,
     "InvalidRange"),
    ("PreconditionFailed", lambda s3: s3.get_object(Bucket=B, Key="obj", IfMatch='"nope"'),
     412, "PreconditionFailed"),
    ("NotImplemented", lambda s3: s3.put_bucket_website(
        Bucket=B, WebsiteConfiguration={"IndexDocument": {"Suffix": "i.html"}}), 501,
     "NotImplemented"),
]


@pytest.mark.parametrize(("name", "call", "status", "code"), CASES,
                         ids=[c[0] for c in CASES])
def test_boto_errors(setup, name, call, status, code) -> None:
    got_status, got_code, rid = _boto(lambda: call(setup))
    assert (got_status, got_code) == (status, code)
    assert len(rid) >= 16


def test_bucket_already_owned_by_you(setup, cluster) -> None:
    # us-east-1 answers 200 to the owner (legacy); elsewhere 409 BucketAlreadyOwnedByYou.
    r = _signed(cluster, "PUT", f"/{B}")
    if cluster.env["AWS_DEFAULT_REGION"] == "us-east-1":
        assert r.status_code == 200
    else:
        assert (r.status_code, _code(r)) == (409, "BucketAlreadyOwnedByYou")


def test_not_modified(setup) -> None:
    etag = setup.head_object(Bucket=B, Key="obj")["ETag"]
    status, code, rid = _boto(lambda: setup.get_object(Bucket=B, Key="obj", IfNoneMatch=etag))
    assert status == 304 and rid


def test_raw_errors(setup, cluster) -> None:
    r = _signed(cluster, "PATCH", f"/{B}/obj")
    assert (r.status_code, _code(r)) == (405, "MethodNotAllowed")
    r = _signed(cluster, "GET", f"/{B}/obj", secret="wrong" * 8)
    assert (r.status_code, _code(r)) == (403, "SignatureDoesNotMatch")
    r = _signed(cluster, "GET", f"/{B}/obj", access="AKIANOTAREALKEY00000")
    assert (r.status_code, _code(r)) == (403, "InvalidAccessKeyId")
    skewed = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    r = _signed(cluster, "GET", f"/{B}/obj", when=skewed)
    assert (r.status_code, _code(r)) == (403, "RequestTimeTooSkewed")
    r = requests.get(f"{cluster.endpoint}/{B}/obj", timeout=10)
    assert (r.status_code, _code(r)) == (403, "AccessDenied")
    for resp in (r,):
        assert resp.headers.get("x-amz-request-id")
        assert "<RequestId>" + resp.headers["x-amz-request-id"] + "</RequestId>" in resp.text


def test_missing_content_length(setup, cluster) -> None:
    """A PUT with a chunked body but no Content-Length and no aws-chunked framing."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(cluster.endpoint)
    path = f"/{B}/nolen"
    creds = Credentials(cluster.env["AWS_ACCESS_KEY_ID"], cluster.env["AWS_SECRET_ACCESS_KEY"])
    req = AWSRequest("PUT", cluster.endpoint + path, headers={
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    SigV4Auth(creds, "s3", cluster.env["AWS_DEFAULT_REGION"]).add_auth(req)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.putrequest("PUT", path, skip_accept_encoding=True)
    for k, v in req.headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    assert resp.status == 411 and "<Code>MissingContentLength</Code>" in body
