"""Tests for gateway.s3.sigv4: AWS example vectors, botocore-signed requests, aws-chunked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import botocore.session
import pytest
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials
from multidict import CIMultiDict

from gateway.s3.chunked import ChunkedDecoder
from gateway.s3.sigv4 import AuthResult, authenticate
from gateway.s3.sigv4_canonical import canonical_query, canonical_uri, signing_key
from gateway.s3.sigv4_fields import SigV4Error

# --------------------------------------------------------------------------- fixtures

EX_AK = "AKIAIOSFODNN7EXAMPLE"
EX_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EX_NOW = datetime(2013, 5, 24, 0, 0, 0, tzinfo=UTC)
EX_CRED = f"{EX_AK}/20130524/us-east-1/s3/aws4_request"
EMPTY = hashlib.sha256(b"").hexdigest()

AK = "TESSERAKEY0000000001"
SECRET = "tessera/secret+key=0123456789abcdefghij"
ENDPOINT = "http://127.0.0.1:9000"


def lookup(ak: str) -> str | None:
    """Secret store for the tests."""
    return {EX_AK: EX_SECRET, AK: SECRET}.get(ak)


def expect_error(code: str, fn: Callable[[], Any]) -> SigV4Error:
    """Run ``fn`` and assert it raises SigV4Error with ``code``."""
    with pytest.raises(SigV4Error) as info:
        fn()
    assert info.value.code == code, (info.value.code, info.value.message)
    return info.value


def example_auth(signed_headers: str, signature: str) -> str:
    """Authorization header for the AWS documentation examples."""
    return (
        f"AWS4-HMAC-SHA256 Credential={EX_CRED},"
        f"SignedHeaders={signed_headers},Signature={signature}"
    )


# --------------------------------------------------------------------------- AWS vectors


def test_aws_example_get_object_with_range() -> None:
    headers = {
        "Host": "examplebucket.s3.amazonaws.com",
        "Range": "bytes=0-9",
        "x-amz-content-sha256": EMPTY,
        "x-amz-date": "20130524T000000Z",
        "Authorization": example_auth(
            "host;range;x-amz-content-sha256;x-amz-date",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
    }
    result = authenticate("GET", "/test.txt", [], headers, lookup, EX_NOW)
    assert result.access_key == EX_AK
    assert result.region == "us-east-1"
    assert result.service == "s3"
    assert result.scope == "20130524/us-east-1/s3/aws4_request"
    assert result.signed_headers == ("host", "range", "x-amz-content-sha256", "x-amz-date")
    assert result.payload_mode == "sha256:" + EMPTY
    assert not result.presigned and not result.anonymous
    assert result.signing_key == signing_key(EX_SECRET, "20130524", "us-east-1", "s3")
    # a different range value breaks the signature
    headers["Range"] = "bytes=0-10"
    expect_error(
        "SignatureDoesNotMatch",
        lambda: authenticate("GET", "/test.txt", [], headers, lookup, EX_NOW),
    )


def test_aws_example_put_object_path_needs_encoding() -> None:
    # "PUT test$file.text": the '$' is encoded as %24 in the canonical URI.
    headers = {
        "Host": "examplebucket.s3.amazonaws.com",
        "Date": "Fri, 24 May 2013 00:00:00 GMT",
        "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": hashlib.sha256(b"Welcome to Amazon S3.").hexdigest(),
        "Authorization": example_auth(
            "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
        ),
    }
    result = authenticate("PUT", "/test$file.text", [], headers, lookup, EX_NOW)
    assert result.payload_mode.startswith("sha256:44ce7dd6")
    assert authenticate("PUT", "/test%24file.text", [], headers, lookup, EX_NOW) == result


@pytest.mark.parametrize(
    ("query", "signature"),
    [
        ([("lifecycle", "")], "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        (
            [("max-keys", "2"), ("prefix", "J")],
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ],
)
def test_aws_example_bucket_requests(query: list[tuple[str, str]], signature: str) -> None:
    headers = {
        "Host": "examplebucket.s3.amazonaws.com",
        "x-amz-date": "20130524T000000Z",
        "x-amz-content-sha256": EMPTY,
        "Authorization": example_auth("host;x-amz-content-sha256;x-amz-date", signature),
    }
    authenticate("GET", "/", query, headers, lookup, EX_NOW)
    authenticate("GET", "/", list(reversed(query)), headers, lookup, EX_NOW)
    expect_error(
        "SignatureDoesNotMatch",
        lambda: authenticate("GET", "/", [*query, ("x", "1")], headers, lookup, EX_NOW),
    )


EX_PRESIGN_QUERY = [
    ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
    ("X-Amz-Credential", EX_CRED),
    ("X-Amz-Date", "20130524T000000Z"),
    ("X-Amz-Expires", "86400"),
    ("X-Amz-SignedHeaders", "host"),
    ("X-Amz-Signature", "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"),
]
EX_HOST = {"Host": "examplebucket.s3.amazonaws.com"}


def test_aws_example_presigned_url() -> None:
    result = authenticate("GET", "/test.txt", EX_PRESIGN_QUERY, EX_HOST, lookup, EX_NOW)
    assert result.presigned and not result.anonymous
    assert result.payload_mode == "unsigned"
    assert result.signed_headers == ("host",)
    later = EX_NOW + timedelta(seconds=86400)
    authenticate("GET", "/test.txt", EX_PRESIGN_QUERY, EX_HOST, lookup, later)
    err = expect_error(
        "AccessDenied",
        lambda: authenticate(
            "GET", "/test.txt", EX_PRESIGN_QUERY, EX_HOST, lookup, later + timedelta(seconds=1)
        ),
    )
    assert err.message == "Request has expired"
    expect_error(
        "SignatureDoesNotMatch",
        lambda: authenticate("GET", "/test2.txt", EX_PRESIGN_QUERY, EX_HOST, lookup, EX_NOW),
    )
    expect_error(
        "SignatureDoesNotMatch",
        lambda: authenticate("PUT", "/test.txt", EX_PRESIGN_QUERY, EX_HOST, lookup, EX_NOW),
    )
    other_host = {"Host": "otherbucket.s3.amazonaws.com"}
    expect_error(
        "SignatureDoesNotMatch",
        lambda: authenticate("GET", "/test.txt", EX_PRESIGN_QUERY, other_host, lookup, EX_NOW),
    )


def test_presigned_parameter_errors() -> None:
    def with_param(name: str, value: str) -> list[tuple[str, str]]:
        return [(k, value if k == name else v) for k, v in EX_PRESIGN_QUERY]

    def run(query: list[tuple[str, str]], now: datetime = EX_NOW) -> AuthResult:
        return authenticate("GET", "/test.txt", query, EX_HOST, lookup, now)

    expect_error("AuthorizationQueryParametersError", lambda: run(EX_PRESIGN_QUERY[1:]))
    expect_error(
        "AuthorizationQueryParametersError", lambda: run(with_param("X-Amz-Expires", "604801"))
    )
    expect_error(
        "AuthorizationQueryParametersError", lambda: run(with_param("X-Amz-Expires", "-1"))
    )
    expect_error(
        "AuthorizationQueryParametersError", lambda: run(with_param("X-Amz-Algorithm", "AWS4"))
    )
    expect_error(
        "AuthorizationQueryParametersError", lambda: run(with_param("X-Amz-Date", "2013-05-24"))
    )
    expect_error(
        "AuthorizationQueryParametersError",
        lambda: run(with_param("X-Amz-Credential", f"{EX_AK}/20130525/us-east-1/s3/aws4_request")),
    )
    expect_error(
        "InvalidAccessKeyId",
        lambda: run(with_param("X-Amz-Credential", "NOPE/20130524/us-east-1/s3/aws4_request")),
    )
    # the maximum is accepted (signature then fails because the value is signed)
    expect_error("SignatureDoesNotMatch", lambda: run(with_param("X-Amz-Expires", "604800")))
    err = expect_error("AccessDenied", lambda: run(EX_PRESIGN_QUERY, EX_NOW - timedelta(hours=1)))
    assert err.message == "Request is not valid yet"
    # header auth and query auth together
    both = {**EX_HOST, "Authorization": example_auth("host", "0" * 64)}
    expect_error(
        "InvalidArgument",
        lambda: authenticate("GET", "/test.txt", EX_PRESIGN_QUERY, both, lookup, EX_NOW),
    )


# The chunked upload example ("Transferring Payload in Multiple Chunks").
CHUNK_EX_HEADERS = {
    "Host": "s3.amazonaws.com",
    "x-amz-date": "20130524T000000Z",
    "x-amz-storage-class": "REDUCED_REDUNDANCY",
    "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "Content-Encoding": "aws-chunked",
    "x-amz-decoded-content-length": "66560",
    "Content-Length": "66824",
    "Authorization": example_auth(
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class",
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    ),
}
CHUNK_EX_SIGS = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]
CHUNK_EX_BODY = (
    f"10000;chunk-signature={CHUNK_EX_SIGS[0]}\r\n".encode()
    + b"a" * 65536
    + b"\r\n"
    + f"400;chunk-signature={CHUNK_EX_SIGS[1]}\r\n".encode()
    + b"a" * 1024
    + b"\r\n"
    + f"0;chunk-signature={CHUNK_EX_SIGS[2]}\r\n\r\n".encode()
)


@pytest.fixture
def chunk_auth() -> AuthResult:
    """AuthResult of the AWS chunked upload example (seed signature 4f232c43...)."""
    return authenticate(
        "PUT", "/examplebucket/chunkObject.txt", [], CHUNK_EX_HEADERS, lookup, EX_NOW
    )


def decode_all(decoder: ChunkedDecoder, pieces: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """Feed ``pieces`` and return (payload, trailers)."""
    out = bytearray()
    for piece in pieces:
        for part in decoder.feed(piece):
            out += part
    return bytes(out), decoder.finish()


def test_aws_example_chunked_upload(chunk_auth: AuthResult) -> None:
    assert len(CHUNK_EX_BODY) == 66824
    assert chunk_auth.payload_mode == "streaming-signed"
    assert (
        chunk_auth.signature == "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    )
    decoder = ChunkedDecoder(chunk_auth, True, None)
    payload, trailers = decode_all(decoder, [CHUNK_EX_BODY])
    assert payload == b"a" * 66560
    assert trailers == {}
    assert decoder.decoded_bytes == 66560
    assert decoder.done


def test_aws_example_chunked_byte_at_a_time_and_random_splits(chunk_auth: AuthResult) -> None:
    body = CHUNK_EX_BODY
    decoder = ChunkedDecoder(chunk_auth, True, None)
    payload, _ = decode_all(decoder, [body[i : i + 1] for i in range(len(body))])
    assert payload == b"a" * 66560
    rng = random.Random(7)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(body)), rng.randint(1, 40)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        decoder = ChunkedDecoder(chunk_auth, True, None)
        assert decode_all(decoder, pieces)[0] == b"a" * 66560


def test_aws_example_chunked_forgeries(chunk_auth: AuthResult) -> None:
    # flipped payload byte in the second chunk: first chunk is released, second never is
    body = bytearray(CHUNK_EX_BODY)
    body[65626 + 86 + 10] ^= 1
    decoder = ChunkedDecoder(chunk_auth, True, None)
    released = decoder.feed(bytes(body[:65626]))
    assert sum(len(p) for p in released) == 65536
    expect_error("SignatureDoesNotMatch", lambda: decoder.feed(bytes(body[65626:])))
    assert decoder.decoded_bytes == 65536
    # errors are sticky
    expect_error("SignatureDoesNotMatch", lambda: decoder.feed(b""))
    expect_error("SignatureDoesNotMatch", decoder.finish)
    # chunk signature replaced with a made-up one
    forged = CHUNK_EX_BODY.replace(CHUNK_EX_SIGS[0].encode(), b"1" * 64)
    expect_error(
        "SignatureDoesNotMatch", lambda: ChunkedDecoder(chunk_auth, True, None).feed(forged)
    )
    # chunk signature missing
    stripped = CHUNK_EX_BODY.replace(f";chunk-signature={CHUNK_EX_SIGS[0]}".encode(), b"")
    expect_error(
        "SignatureDoesNotMatch", lambda: ChunkedDecoder(chunk_auth, True, None).feed(stripped)
    )
    # final chunk forged (a truncation attack that swaps the end marker)
    final = CHUNK_EX_BODY.replace(CHUNK_EX_SIGS[2].encode(), CHUNK_EX_SIGS[1].encode())
    expect_error(
        "SignatureDoesNotMatch", lambda: ChunkedDecoder(chunk_auth, True, None).feed(final)
    )
    # wrong seed: same body under a different request signature
    other = AuthResult(**{**chunk_auth.__dict__, "signature": "2" * 64})
    expect_error(
        "SignatureDoesNotMatch", lambda: ChunkedDecoder(other, True, None).feed(CHUNK_EX_BODY)
    )


def test_aws_example_chunked_truncation(chunk_auth: AuthResult) -> None:
    rng = random.Random(3)
    cuts = {1, 10, 88, 65626, 65627, 66737, 66738, len(CHUNK_EX_BODY) - 1}
    cuts |= set(rng.sample(range(1, len(CHUNK_EX_BODY)), 30))
    for cut in sorted(cuts):
        decoder = ChunkedDecoder(chunk_auth, True, None)
        decoder.feed(CHUNK_EX_BODY[:cut])
        expect_error("IncompleteBody", decoder.finish)


def test_signed_chunk_is_held_until_verified(chunk_auth: AuthResult) -> None:
    decoder = ChunkedDecoder(chunk_auth, True, None)
    assert decoder.feed(CHUNK_EX_BODY[: 88 + 65535]) == []
    assert decoder.decoded_bytes == 0
    released = decoder.feed(CHUNK_EX_BODY[88 + 65535 : 88 + 65536])
    assert b"".join(released) == b"a" * 65536


def test_signed_chunk_larger_than_limit(chunk_auth: AuthResult) -> None:
    decoder = ChunkedDecoder(chunk_auth, True, None, max_chunk_size=65535)
    expect_error("InvalidRequest", lambda: decoder.feed(CHUNK_EX_BODY[:100]))


def test_signed_decoder_requires_header_auth() -> None:
    with pytest.raises(ValueError):
        ChunkedDecoder(None, True, None)


# --------------------------------------------------------------------------- path & query


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("", "/"),
        ("/", "/"),
        ("/bucket/a b", "/bucket/a%20b"),
        ("/bucket/a%20b", "/bucket/a%20b"),
        ("/bucket/a%2fb", "/bucket/a%2Fb"),
        ("/bucket/a%2Fb/c", "/bucket/a%2Fb/c"),
        ("/test$file.text", "/test%24file.text"),
        ("/b/k+=&@!", "/b/k%2B%3D%26%40%21"),
        ("/b//x/./../y~", "/b//x/./../y~"),
        ("/b/ü", "/b/%C3%BC"),
        ("/b/%C3%BC", "/b/%C3%BC"),
        ("/b/key?ignored=1", "/b/key"),
    ],
)
def test_canonical_uri(raw: str, canonical: str) -> None:
    assert canonical_uri(raw) == canonical


def test_canonical_query() -> None:
    query = [("prefix", "a b/c"), ("acl", ""), ("b", "2"), ("b", "1"), ("ü", "+")]
    assert canonical_query(query) == "%C3%BC=%2B&acl=&b=1&b=2&prefix=a%20b%2Fc"
    signed = [("X-Amz-Signature", "x"), ("a", "1")]
    assert canonical_query(signed, exclude_signature=True) == "a=1"


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
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
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


# --------------------------------------------------------------------------- aws-chunked


def sign_chunk(auth: AuthResult, previous: str, data: bytes) -> str:
    """Independent chunk signature (AWS4-HMAC-SHA256-PAYLOAD)."""
    sts = "\n".join(
        [
            "AWS4-HMAC-SHA256-PAYLOAD",
            auth.amz_date,
            auth.scope,
            previous,
            EMPTY,
            hashlib.sha256(data).hexdigest(),
        ]
    )
    return hmac.new(auth.signing_key, sts.encode(), hashlib.sha256).hexdigest()


def sign_trailer(auth: AuthResult, previous: str, trailers: list[tuple[str, str]]) -> str:
    """Independent trailer signature (AWS4-HMAC-SHA256-TRAILER)."""
    canonical = "".join(f"{n}:{v}\n" for n, v in trailers).encode()
    sts = "\n".join(
        [
            "AWS4-HMAC-SHA256-TRAILER",
            auth.amz_date,
            auth.scope,
            previous,
            hashlib.sha256(canonical).hexdigest(),
        ]
    )
    return hmac.new(auth.signing_key, sts.encode(), hashlib.sha256).hexdigest()


def encode_chunked(
    chunks: list[bytes],
    auth: AuthResult | None = None,
    trailers: list[tuple[str, str]] | None = None,
    sign_trailers: bool = False,
) -> bytes:
    """Build an aws-chunked body, signed when ``auth`` is given."""
    out = bytearray()
    previous = auth.signature if auth else ""
    for data in [*chunks, b""]:
        if auth is not None:
            previous = sign_chunk(auth, previous, data)
            out += f"{len(data):x};chunk-signature={previous}\r\n".encode()
        else:
            out += f"{len(data):x}\r\n".encode()
        if data:
            out += data + b"\r\n"
    if trailers is None:
        out += b"\r\n"
        return bytes(out)
    for name, value in trailers:
        out += f"{name}:{value}\r\n".encode()
    if sign_trailers:
        assert auth is not None
        out += f"x-amz-trailer-signature:{sign_trailer(auth, previous, trailers)}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


def streaming_auth(content_sha256: str, extra: dict[str, str] | None = None) -> AuthResult:
    """AuthResult for a botocore-signed streaming PUT with the given payload mode."""
    headers = {
        "X-Amz-Content-SHA256": content_sha256,
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": "13",
        **(extra or {}),
    }
    request = AWSRequest(method="PUT", url=f"{ENDPOINT}/bucket/stream.bin", headers=headers)
    botocore.auth.S3SigV4Auth(Credentials(AK, SECRET), "s3", "us-east-1").add_auth(request)
    sent = dict(request.headers.items())
    if not any(k.lower() == "host" for k in sent):
        sent["Host"] = "127.0.0.1:9000"
    now = datetime.strptime(sent["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return authenticate("PUT", "/bucket/stream.bin", [], sent, lookup, now)


CHUNKS = [b"hello", b" wor", b"ld!\r\n"]
PAYLOAD = b"".join(CHUNKS)
CRC = base64.b64encode(zlib.crc32(PAYLOAD).to_bytes(4, "big")).decode()


def _modes() -> list[tuple[str, bool, list[str] | None, bool]]:
    """(x-amz-content-sha256, signed, trailer names, signed trailer) per streaming mode."""
    return [
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", True, None, False),
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", True, ["x-amz-checksum-crc32"], True),
        ("STREAMING-UNSIGNED-PAYLOAD-TRAILER", False, ["x-amz-checksum-crc32"], False),
        ("UNSIGNED-PAYLOAD", False, None, False),
    ]


def _body_for(mode: tuple[str, bool, list[str] | None, bool]) -> tuple[AuthResult, bytes]:
    sha, signed, names, sign_trailers = mode
    extra = {"x-amz-trailer": names[0]} if names else None
    auth = streaming_auth(sha, extra)
    trailers = [("x-amz-checksum-crc32", CRC)] if names else None
    body = encode_chunked(CHUNKS, auth if signed else None, trailers, sign_trailers)
    return auth, body


@pytest.mark.parametrize("mode", _modes(), ids=lambda m: m[0])
def test_chunked_split_at_every_offset(mode: tuple[str, bool, list[str] | None, bool]) -> None:
    auth, body = _body_for(mode)
    _, signed, names, _ = mode
    expected_trailers = {"x-amz-checksum-crc32": CRC} if names else {}
    for cut in range(len(body) + 1):
        decoder = ChunkedDecoder(auth, signed, names)
        assert decode_all(decoder, [body[:cut], body[cut:]]) == (PAYLOAD, expected_trailers)
    for a in range(0, len(body), 7):
        for b in range(a, len(body), 5):
            decoder = ChunkedDecoder(auth, signed, names)
            pieces = [body[:a], body[a:b], body[b:]]
            assert decode_all(decoder, pieces) == (PAYLOAD, expected_trailers)
    decoder = ChunkedDecoder(auth, signed, names)
    pieces = [body[i : i + 1] for i in range(len(body))]
    assert decode_all(decoder, pieces) == (PAYLOAD, expected_trailers)


@pytest.mark.parametrize("mode", _modes(), ids=lambda m: m[0])
def test_chunked_truncated_everywhere(mode: tuple[str, bool, list[str] | None, bool]) -> None:
    auth, body = _body_for(mode)
    _, signed, names, _ = mode
    for cut in range(len(body)):
        decoder = ChunkedDecoder(auth, signed, names)
        decoder.feed(body[:cut])
        expect_error("IncompleteBody", decoder.finish)


def test_unsigned_chunks_stream_mid_chunk() -> None:
    decoder = ChunkedDecoder(None, False, None)
    assert b"".join(decoder.feed(b"a;")) == b""
    out = decoder.feed(b"chunk-signature=" + b"0" * 64 + b"\r\n01234")
    assert b"".join(out) == b"01234"
    assert decoder.decoded_bytes == 5
    out = decoder.feed(b"56789\r\n0\r\n\r\n")
    assert b"".join(out) == b"56789"
    assert decoder.finish() == {}


def test_mutable_input_buffers_are_not_aliased() -> None:
    decoder = ChunkedDecoder(None, False, None)
    buf = bytearray(b"3\r\nabc")
    out = decoder.feed(buf)
    buf[:] = b"zzzzzz"
    buf.clear()
    assert b"".join(out) == b"abc"


def test_signed_trailer_forgeries() -> None:
    mode = _modes()[1]
    auth, body = _body_for(mode)
    names = ["x-amz-checksum-crc32"]
    decode_all(ChunkedDecoder(auth, True, names), [body])
    # checksum value changed after signing
    forged = body.replace(CRC.encode(), b"AAAAAA==")
    expect_error("SignatureDoesNotMatch", lambda: ChunkedDecoder(auth, True, names).feed(forged))
    # trailer signature removed
    no_sig = encode_chunked(CHUNKS, auth, [("x-amz-checksum-crc32", CRC)], sign_trailers=False)
    expect_error("SignatureDoesNotMatch", lambda: ChunkedDecoder(auth, True, names).feed(no_sig))
    # trailer signature computed over different trailer bytes
    wrong = encode_chunked(CHUNKS, auth, [("x-amz-checksum-crc32", "AAAAAA==")], True)
    wrong = wrong.replace(b"AAAAAA==", CRC.encode())
    expect_error("SignatureDoesNotMatch", lambda: ChunkedDecoder(auth, True, names).feed(wrong))


def test_trailer_announcement_rules() -> None:
    names = ["x-amz-checksum-crc32"]
    missing = encode_chunked(CHUNKS, None, [])
    expect_error("IncompleteBody", lambda: ChunkedDecoder(None, False, names).feed(missing))
    undeclared = encode_chunked(CHUNKS, None, [("x-amz-checksum-crc32", CRC), ("x-evil", "1")])
    expect_error("InvalidRequest", lambda: ChunkedDecoder(None, False, names).feed(undeclared))
    unexpected = encode_chunked(CHUNKS, None, [("x-amz-checksum-crc32", CRC)])
    expect_error("InvalidRequest", lambda: ChunkedDecoder(None, False, None).feed(unexpected))
    duplicated = encode_chunked(
        CHUNKS, None, [("x-amz-checksum-crc32", CRC), ("x-amz-checksum-crc32", CRC)]
    )
    expect_error("InvalidRequest", lambda: ChunkedDecoder(None, False, names).feed(duplicated))
    assert unexpected.endswith(b"\r\n\r\n")
    spoofed_sig = unexpected[:-2] + b"x-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n"
    expect_error("InvalidRequest", lambda: ChunkedDecoder(None, False, names).feed(spoofed_sig))
    # names are matched case-insensitively
    decoder = ChunkedDecoder(None, False, ["X-Amz-Checksum-CRC32"])
    assert decode_all(decoder, [unexpected.replace(b"x-amz-checksum", b"X-Amz-Checksum")])[1] == {
        "x-amz-checksum-crc32": CRC
    }


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\n",  # not hex
        b"0x5\r\nhello\r\n0\r\n\r\n",  # python-style prefix
        b"1_0\r\n",  # underscores
        b"+5\r\n",
        b"5\nhello\r\n",  # bare LF
        b"5;foo=bar\r\nhello\r\n",  # unknown extension
        b"5;chunk-signature=abc\r\n",  # short signature
        b"5\r\nhelloXX0\r\n\r\n",  # missing CRLF after data
        b"0\r\n\r\nextra",  # trailing garbage
        b"0\r\nnot a trailer\r\n\r\n",
        b"1" * 2000,  # endless header line
    ],
)
def test_malformed_framing(body: bytes) -> None:
    decoder = ChunkedDecoder(None, False, None)
    with pytest.raises(SigV4Error) as info:
        decoder.feed(body)
        decoder.finish()
    assert info.value.code in {"InvalidRequest", "IncompleteBody"}


def test_chunk_size_limit_and_bounded_line_buffer() -> None:
    decoder = ChunkedDecoder(None, False, None, max_chunk_size=1024)
    expect_error("InvalidRequest", lambda: decoder.feed(b"401\r\n"))
    decoder = ChunkedDecoder(None, False, None, max_chunk_size=1024)
    assert decoder.feed(b"400\r\n") == []
    huge = ChunkedDecoder(None, False, None)
    huge.feed(b"1" * 1000)
    expect_error("InvalidRequest", lambda: huge.feed(b"1" * 100))
    assert len(huge._line) <= 1100  # never buffered the whole input


# --------------------------------------------------------------------------- misc auth


def test_anonymous_requests() -> None:
    result = authenticate("GET", "/bucket/key", [("prefix", "a")], {"Host": "x"}, lookup, EX_NOW)
    assert result.anonymous and not result.presigned
    assert result.payload_mode == "unsigned" and result.access_key == ""
    trailer = {"Host": "x", "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}
    assert (
        authenticate("PUT", "/b/k", [], trailer, lookup, EX_NOW).payload_mode
        == "streaming-unsigned-trailer"
    )
    hashed = {"Host": "x", "x-amz-content-sha256": EMPTY}
    assert authenticate("PUT", "/b/k", [], hashed, lookup, EX_NOW).payload_mode == "sha256:" + EMPTY


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=", "InvalidRequest"),
        ("AWS4-HMAC-SHA256", "AuthorizationHeaderMalformed"),
        ("AWS4-HMAC-SHA256 Credential=x", "AuthorizationHeaderMalformed"),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=XYZ",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/ec2/aws4_request, "
            "SignedHeaders=host, Signature=" + "0" * 64,
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20130525/us-east-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=" + "0" * 64,
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=x-amz-date, Signature=" + "0" * 64,
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=NOPE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
            "InvalidAccessKeyId",
        ),
    ],
)
def test_malformed_authorization(authorization: str, code: str) -> None:
    headers = {
        "Host": "h",
        "x-amz-date": "20130524T000000Z",
        "x-amz-content-sha256": EMPTY,
        "Authorization": authorization,
    }
    expect_error(code, lambda: authenticate("GET", "/", [], headers, lookup, EX_NOW))


def test_missing_or_bad_date() -> None:
    base = {
        "Host": "h",
        "x-amz-content-sha256": EMPTY,
        "Authorization": example_auth("host;x-amz-content-sha256;x-amz-date", "0" * 64),
    }
    expect_error("AccessDenied", lambda: authenticate("GET", "/", [], base, lookup, EX_NOW))
    bad = {**base, "x-amz-date": "2013-05-24T00:00:00Z"}
    expect_error("AccessDenied", lambda: authenticate("GET", "/", [], bad, lookup, EX_NOW))


def test_sigv2_presigned_is_refused() -> None:
    query = [("AWSAccessKeyId", EX_AK), ("Expires", "1"), ("Signature", "abc")]
    expect_error("InvalidRequest", lambda: authenticate("GET", "/b/k", query, {}, lookup, EX_NOW))


def test_error_messages_hold_no_secrets() -> None:
    req = capture(make_client(), "put_object", Bucket="bucket", Key="k", Body=b"x")
    err = expect_error(
        "SignatureDoesNotMatch", lambda: req.auth(lookup_secret=lambda ak: SECRET + "x")
    )
    blob = err.message + repr(err.details) + str(err)
    assert SECRET not in blob
    result = req.auth()
    assert SECRET not in repr(result) and result.signing_key.hex() not in repr(result)
