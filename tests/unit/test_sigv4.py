"""Tests for gateway.s3.sigv4: AWS example vectors (headers, presigned, chunked), canonical
path and query, anonymous and malformed requests."""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta

import pytest

from gateway.s3.chunked import ChunkedDecoder
from gateway.s3.sigv4 import AuthResult, authenticate
from gateway.s3.sigv4_canonical import canonical_query, canonical_uri, signing_key
from tests.unit.sigv4_support import (
    EMPTY,
    EX_AK,
    EX_CRED,
    EX_NOW,
    EX_SECRET,
    decode_all,
    example_auth,
    expect_error,
    lookup,
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


def test_a_signed_cookie_is_withheld_from_the_error() -> None:
    """A page the S3 port serves can list `cookie` in SignedHeaders: the browser adds the
    host's cookies (the web console's HttpOnly session too) and the page reads the error.
    The other lines of the canonical request are shown as computed."""
    headers = {
        "Host": "127.0.0.1:9000",
        "Cookie": "tessera_console=SESSIONTOKEN",
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "x-amz-date": "20130524T000000Z",
        "Authorization": example_auth("cookie;host;x-amz-content-sha256;x-amz-date", "0" * 64),
    }
    err = expect_error("SignatureDoesNotMatch",
                       lambda: authenticate("GET", "/b/k", [], headers, lookup, EX_NOW))
    shown = err.details["CanonicalRequest"]
    assert "SESSIONTOKEN" not in shown and "SESSIONTOKEN" not in str(err.details)
    assert shown.split("\n")[3:6] == ["cookie:(withheld)", "host:127.0.0.1:9000",
                                      "x-amz-content-sha256:UNSIGNED-PAYLOAD"]
