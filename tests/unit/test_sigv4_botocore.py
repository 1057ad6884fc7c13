"""gateway.s3.sigv4 against requests botocore itself signs (headers, query, presigned URLs,
checksum trailers)."""

from __future__ import annotations

import base64
import hashlib
import random
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from multidict import CIMultiDict

from gateway.s3.chunked import ChunkedDecoder
from gateway.s3.sigv4 import AuthResult, authenticate
from ops.botoconfig import no_retries
from tests.unit.sigv4_support import (
    AK,
    ENDPOINT,
    SECRET,
    decode_all,
    expect_error,
    lookup,
)

# --------------------------------------------------------------------------- botocore


class _Raw:
    """Minimal urllib3-like raw response for AWSResponse."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        yield self._body


class Captured:
    """A request botocore would have sent, in the shape authenticate() takes."""

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.url = url
        parts = urlsplit(url)
        self.raw_path = parts.path
        self.query = parse_qsl(parts.query, keep_blank_values=True)
        self.headers = dict(headers)
        if not any(k.lower() == "host" for k in headers):
            self.headers["Host"] = parts.netloc
        self.body = body
        self.now = datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)

    def auth(self, **overrides: Any) -> AuthResult:
        """authenticate() with optional overrides of any argument."""
        args: dict[str, Any] = {
            "method": self.method,
            "raw_path": self.raw_path,
            "query": self.query,
            "headers": self.headers,
            "lookup_secret": lookup,
            "now": self.now,
        }
        args.update(overrides)
        return authenticate(**args)


def make_client(endpoint: str = ENDPOINT, **config: Any) -> Any:
    """A botocore S3 client that never touches the network."""
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=AK,
        aws_secret_access_key=SECRET,
        config=no_retries(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            **config,
        ),
    )


def capture(client: Any, operation: str, response_body: bytes = b"", **params: Any) -> Captured:
    """Run one client operation, capturing the signed request instead of sending it."""
    seen: list[Captured] = []

    def before_send(request: Any, **kwargs: Any) -> AWSResponse:
        body = request.body
        if body is None:
            data = b""
        elif isinstance(body, bytes | bytearray):
            data = bytes(body)
        else:
            data = body.read()
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        seen.append(Captured(request.method, request.url, headers, data))
        return AWSResponse(request.url, 200, {"ETag": '"0"'}, _Raw(response_body))

    client.meta.events.register("before-send.s3", before_send)
    getattr(client, operation)(**params)
    assert len(seen) == 1
    return seen[0]


KEYS = [
    "plain.txt",
    "dir/sub/file name.txt",
    "weird +=&?#%!$'()*,;:@[]~^`{}|.bin",
    "ünïcødé/ß/日本.txt",
    "a//b/./../c",
]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("endpoint", [ENDPOINT, "https://127.0.0.1:9000"])
def test_botocore_put_object_accepted(key: str, endpoint: str) -> None:
    client = make_client(endpoint, request_checksum_calculation="when_required")
    req = capture(
        client,
        "put_object",
        Bucket="bucket",
        Key=key,
        Body=b"hello world",
        ContentType="text/plain",
        Metadata={"colour": "  blue   and  green "},
    )
    result = req.auth()
    assert result.access_key == AK and not result.anonymous and not result.presigned
    sent_sha = {k.lower(): v for k, v in req.headers.items()}["x-amz-content-sha256"]
    if sent_sha == "UNSIGNED-PAYLOAD":
        assert result.payload_mode == "unsigned"
    else:
        assert result.payload_mode == "sha256:" + hashlib.sha256(b"hello world").hexdigest()
    assert "x-amz-meta-colour" in result.signed_headers
    # tampering with anything signed fails
    other_key = {**req.headers, "x-amz-meta-colour": "red"}
    expect_error("SignatureDoesNotMatch", lambda: req.auth(headers=other_key))
    expect_error("SignatureDoesNotMatch", lambda: req.auth(raw_path=req.raw_path + "x"))
    expect_error("SignatureDoesNotMatch", lambda: req.auth(method="POST"))
    expect_error("SignatureDoesNotMatch", lambda: req.auth(query=[("acl", "")]))
    expect_error("SignatureDoesNotMatch", lambda: req.auth(lookup_secret=lambda ak: "wrong"))
    expect_error("InvalidAccessKeyId", lambda: req.auth(lookup_secret=lambda ak: None))
    # an extra unsigned x-amz-* header is refused
    extra = {**req.headers, "x-amz-acl": "public-read"}
    err = expect_error("AccessDenied", lambda: req.auth(headers=extra))
    assert err.details["HeadersNotSigned"] == "x-amz-acl"
    # unsigned non-amz headers are fine
    req.auth(headers={**req.headers, "User-Agent": "changed", "X-Forwarded-For": "1.2.3.4"})


def test_botocore_header_casing_and_multidict() -> None:
    req = capture(make_client(), "put_object", Bucket="bucket", Key="k", Body=b"x")
    lower = {k.lower(): v for k, v in req.headers.items()}
    upper = {k.upper(): v for k, v in req.headers.items()}
    req.auth(headers=lower)
    req.auth(headers=upper)
    req.auth(headers=CIMultiDict(req.headers))


def test_botocore_query_and_special_operations() -> None:
    client = make_client()
    listing = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></ListBucketResult>'
    )
    req = capture(
        client,
        "list_objects_v2",
        response_body=listing,
        Bucket="bucket",
        Prefix="a b/ü+&=",
        Delimiter="/",
        MaxKeys=7,
        StartAfter="x~y",
    )
    req.auth()
    tampered = [(k, "8" if k == "max-keys" else v) for k, v in req.query]
    expect_error("SignatureDoesNotMatch", lambda: req.auth(query=tampered))
    req = capture(
        client,
        "copy_object",
        response_body=b"<CopyObjectResult><ETag>&quot;0&quot;</ETag></CopyObjectResult>",
        Bucket="bucket",
        Key="dst key",
        CopySource={"Bucket": "src", "Key": "söurce key"},
    )
    req.auth()
    bad = {**req.headers, "x-amz-copy-source": "src/other"}
    expect_error("SignatureDoesNotMatch", lambda: req.auth(headers=bad))
    req = capture(client, "delete_object", Bucket="bucket", Key="k", VersionId="v 1")
    req.auth()


def test_botocore_clock_skew() -> None:
    req = capture(make_client(), "put_object", Bucket="bucket", Key="k", Body=b"x")
    req.auth(now=req.now + timedelta(seconds=900))
    req.auth(now=req.now - timedelta(seconds=900))
    err = expect_error(
        "RequestTimeTooSkewed", lambda: req.auth(now=req.now + timedelta(seconds=901))
    )
    assert "secret" not in err.message.lower()
    expect_error("RequestTimeTooSkewed", lambda: req.auth(now=req.now - timedelta(seconds=901)))
    req.auth(now=req.now + timedelta(seconds=1000), max_skew_s=1200)
    naive = req.now.replace(tzinfo=None)
    req.auth(now=naive)


def test_botocore_content_sha256_rules() -> None:
    req = capture(make_client(), "put_object", Bucket="bucket", Key="k", Body=b"x")
    missing = {k: v for k, v in req.headers.items() if k.lower() != "x-amz-content-sha256"}
    err = expect_error("InvalidRequest", lambda: req.auth(headers=missing))
    assert "x-amz-content-sha256" in err.message
    bogus = {**missing, "X-Amz-Content-SHA256": "not-a-hash"}
    expect_error("InvalidArgument", lambda: req.auth(headers=bogus))
    # a different (valid) hash is bound by the signature
    swapped = {**missing, "X-Amz-Content-SHA256": hashlib.sha256(b"y").hexdigest()}
    expect_error("SignatureDoesNotMatch", lambda: req.auth(headers=swapped))


@pytest.mark.parametrize("operation", ["get_object", "put_object", "head_object"])
def test_botocore_presigned_urls(operation: str) -> None:
    client = make_client()
    url = client.generate_presigned_url(
        operation, Params={"Bucket": "bucket", "Key": "dir/ä b+c.txt"}, ExpiresIn=3600
    )
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    when = datetime.strptime(dict(query)["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    method = {"get_object": "GET", "put_object": "PUT", "head_object": "HEAD"}[operation]
    headers = {"Host": parts.netloc}

    def run(**overrides: Any) -> AuthResult:
        args: dict[str, Any] = {
            "method": method,
            "raw_path": parts.path,
            "query": query,
            "headers": headers,
            "lookup_secret": lookup,
            "now": when + timedelta(seconds=10),
        }
        args.update(overrides)
        return authenticate(**args)

    result = run()
    assert result.presigned and result.payload_mode == "unsigned"
    assert result.access_key == AK
    run(now=when + timedelta(seconds=3600))
    err = expect_error("AccessDenied", lambda: run(now=when + timedelta(seconds=3601)))
    assert err.message == "Request has expired"
    expect_error("SignatureDoesNotMatch", lambda: run(raw_path=parts.path + "x"))
    expect_error("SignatureDoesNotMatch", lambda: run(query=[*query, ("versionId", "1")]))
    longer = [(k, "7200" if k == "X-Amz-Expires" else v) for k, v in query]
    expect_error("SignatureDoesNotMatch", lambda: run(query=longer))
    expect_error("SignatureDoesNotMatch", lambda: run(lookup_secret=lambda ak: "other"))
    expect_error("InvalidAccessKeyId", lambda: run(lookup_secret=lambda ak: None))
    expect_error("SignatureDoesNotMatch", lambda: run(headers={"Host": "127.0.0.1:9001"}))
    expect_error(
        "AccessDenied", lambda: run(headers={**headers, "x-amz-server-side-encryption": "AES256"})
    )
    # a browser-style PUT with an unsigned trailer body still gets a payload mode
    trailer = {**headers, "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}
    assert run(headers=trailer).payload_mode == "streaming-unsigned-trailer"
    signed_stream = {**headers, "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"}
    expect_error("InvalidRequest", lambda: run(headers=signed_stream))


def test_botocore_put_object_default_checksum_trailer() -> None:
    """boto3 >= 1.36 defaults: aws-chunked body with an unsigned CRC32 trailer over TLS."""
    payload = random.Random(1).randbytes(2 * 1024 * 1024 + 12345)
    client = make_client("https://127.0.0.1:9000")
    req = capture(client, "put_object", Bucket="bucket", Key="big.bin", Body=payload)
    headers = {k.lower(): v for k, v in req.headers.items()}
    assert headers["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert "aws-chunked" in headers["content-encoding"]
    result = req.auth()
    assert result.payload_mode == "streaming-unsigned-trailer"
    names = [n.strip() for n in headers["x-amz-trailer"].split(",")]
    expected_crc = base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode()

    def check(pieces: list[bytes]) -> None:
        decoder = ChunkedDecoder(result, False, names)
        body, trailers = decode_all(decoder, pieces)
        assert body == payload
        assert decoder.decoded_bytes == int(headers["x-amz-decoded-content-length"])
        assert trailers == {"x-amz-checksum-crc32": expected_crc}

    check([req.body])
    rng = random.Random(5)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(req.body)), 50))
        check([req.body[a:b] for a, b in zip([0, *cuts], [*cuts, len(req.body)], strict=True)])
    # the framing tail of the body carries the trailer, split anywhere
    tail = len(req.body) - 60
    for cut in range(tail, len(req.body)):
        check([req.body[:cut], req.body[cut:]])
    for cut in range(tail, len(req.body)):
        decoder = ChunkedDecoder(result, False, names)
        decoder.feed(req.body[:cut])
        expect_error("IncompleteBody", decoder.finish)


def test_error_messages_hold_no_secrets() -> None:
    req = capture(make_client(), "put_object", Bucket="bucket", Key="k", Body=b"x")
    err = expect_error(
        "SignatureDoesNotMatch", lambda: req.auth(lookup_secret=lambda ak: SECRET + "x")
    )
    blob = err.message + repr(err.details) + str(err)
    assert SECRET not in blob
    result = req.auth()
    assert SECRET not in repr(result) and result.signing_key.hex() not in repr(result)
