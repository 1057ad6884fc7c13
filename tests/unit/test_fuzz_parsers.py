"""Property tests: malformed input to the SigV4 verifier, the aws-chunked decoder, the XML
parsers, the bucket policy evaluator and the SSE header parser only ever raises the protocol
errors (SigV4Error / S3Error), never anything that would become a 500."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.s3 import config_lifecycle, config_xml, policy, sse, xml_parse
from gateway.s3.chunked import ChunkedDecoder
from gateway.s3.errors import S3Error
from gateway.s3.sigv4 import AuthResult, authenticate
from gateway.s3.sigv4_fields import SigV4Error

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=200)
AUTH_PIECES = st.sampled_from([
    "AWS4-HMAC-SHA256 ", "Credential=", "AKID/20260102/us-east-1/s3/aws4_request",
    ",", " ", "SignedHeaders=", "host;x-amz-date", "Signature=", "0" * 64, "=", "/", ";",
    "AWS ", "Credential=AKID/2026/x/s3/aws4_request", "\t", "Signature"])


def _lookup(ak: str) -> str | None:
    return "secret" if ak == "AKID" else None


@SETTINGS
@given(method=st.sampled_from(["GET", "PUT", "HEAD", "POST", "DELETE", "BREW"]),
       path=st.text(max_size=80), auth=st.lists(AUTH_PIECES, max_size=12).map("".join),
       extra=st.dictionaries(st.sampled_from(["x-amz-date", "x-amz-content-sha256", "date",
                                              "x-amz-meta-a", "host", "authorization"]),
                             header_text, max_size=5),
       query=st.lists(st.tuples(st.sampled_from(
           ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
            "X-Amz-SignedHeaders", "X-Amz-Signature", "Signature", "AWSAccessKeyId", "x"]),
           header_text), max_size=6))
def test_sigv4_authenticate_raises_only_sigv4_errors(method: str, path: str, auth: str,
                                                     extra: dict[str, str],
                                                     query: list[tuple[str, str]]) -> None:
    headers = {"host": "localhost", **extra}
    if auth:
        headers["authorization"] = auth
    try:
        authenticate(method, "/" + path, query, headers, _lookup, NOW)
    except SigV4Error:
        pass


def _auth() -> AuthResult:
    return AuthResult(access_key="AKID", region="us-east-1", service="s3",
                      signed_headers=("host",), payload_mode="streaming-signed",
                      signature="0" * 64, signing_key=b"k" * 32, amz_date="20260102T030405Z",
                      scope="20260102/us-east-1/s3/aws4_request", presigned=False,
                      anonymous=False)


CHUNK_PIECES = st.sampled_from([
    b"0", b"1", b"a", b"ff", b"10", b";chunk-signature=", b"0" * 64, b"\r\n", b"\r", b"\n",
    b"x-amz-checksum-crc32:", b"AAAAAA==", b"x-amz-trailer-signature:", b"hello", b":",
    b"FFFFFFFFFFFFFFFF", b"-1", b" "])


@SETTINGS
@given(pieces=st.lists(CHUNK_PIECES, max_size=30), signed=st.booleans(),
       trailer=st.sampled_from([None, [], ["x-amz-checksum-crc32"]]),
       split=st.integers(min_value=1, max_value=7))
def test_chunked_decoder_raises_only_sigv4_errors(pieces: list[bytes], signed: bool,
                                                   trailer: list[str] | None,
                                                   split: int) -> None:
    data = b"".join(pieces)
    dec = ChunkedDecoder(_auth() if signed else None, signed, trailer, max_chunk_size=1024)
    try:
        for i in range(0, len(data), split):
            dec.feed(data[i:i + split])
        dec.finish()
    except SigV4Error:
        pass


XML_PIECES = st.sampled_from([
    "<?xml version='1.0'?>", "<Delete>", "</Delete>", "<Object>", "</Object>", "<Key>",
    "</Key>", "k", "<Quiet>true</Quiet>", "<CompleteMultipartUpload>", "<Part>", "</Part>",
    "<PartNumber>", "</PartNumber>", "1", "99999", "<ETag>", "</ETag>",
    "</CompleteMultipartUpload>", "<Tagging><TagSet>", "<Tag><Key>a</Key><Value>b</Value></Tag>",
    "</TagSet></Tagging>", "<!DOCTYPE x [<!ENTITY e 'x'>]>", "&e;", "&amp;", "<![CDATA[x]]>",
    "<VersioningConfiguration>", "<Status>Enabled</Status>", "</VersioningConfiguration>",
    "<CreateBucketConfiguration>", "<LocationConstraint>eu</LocationConstraint>",
    "</CreateBucketConfiguration>", "<CORSConfiguration><CORSRule>", "<AllowedOrigin>*",
    "</AllowedOrigin>", "</CORSRule></CORSConfiguration>", "\x00", "<", ">", "xmlns='x'",
    "<ServerSideEncryptionConfiguration><Rule>", "</Rule></ServerSideEncryptionConfiguration>",
    "<LifecycleConfiguration><Rule>", "</LifecycleConfiguration>"])
PARSERS = [xml_parse.parse_create_bucket, xml_parse.parse_versioning, xml_parse.parse_tagging,
           xml_parse.parse_delete_objects, xml_parse.parse_complete_multipart, config_xml.parse_cors,
           config_lifecycle.parse_lifecycle, config_xml.parse_encryption,
           config_xml.validate_policy]


@SETTINGS
@given(doc=st.one_of(st.lists(XML_PIECES, max_size=25).map("".join).map(str.encode),
                     st.binary(max_size=300)),
       which=st.integers(min_value=0, max_value=len(PARSERS) - 1))
def test_xml_parsers_raise_only_s3_errors(doc: bytes, which: int) -> None:
    try:
        PARSERS[which](doc)
    except S3Error:
        pass


JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
              st.sampled_from(["*", "Allow", "Deny", "s3:GetObject", "arn:aws:s3:::b/*"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(
                                ["Statement", "Effect", "Action", "NotAction", "Resource",
                                 "NotResource", "Principal", "NotPrincipal", "AWS",
                                 "Condition", "Version"]), inner, max_size=5)),
    max_leaves=20)


@SETTINGS
@given(doc=JSONISH, key=st.text(max_size=30))
def test_policy_evaluation_never_crashes(doc: object, key: str) -> None:
    """Any JSON is refused with an S3 error or stored, and a stored policy evaluates."""
    import json

    text = json.dumps(doc)
    try:
        config_xml.validate_policy(text.encode())
        policy.validate(text, "b")
    except S3Error:
        return
    out = policy.evaluate(policy.statements(text), "s3:GetObject",
                          policy.resource_of("b", key), frozenset(), {"aws:sourceip": ["::1"]})
    assert out in (None, "Allow", "Deny")


@SETTINGS
@given(headers=st.dictionaries(st.sampled_from(
    [sse.H_SSE, sse.H_KMS_KEY, sse.H_C_ALG, sse.H_C_KEY, sse.H_C_MD5, sse.H_BUCKET_KEY]),
    st.one_of(header_text, st.sampled_from(["AES256", "aws:kms", "alias/k", "true"])),
    max_size=6))
def test_sse_headers_raise_only_s3_errors(headers: dict[str, str]) -> None:
    try:
        sse.for_write(headers, "t", "us-east-1", None)
    except S3Error:
        pass


def test_policy_semantics() -> None:
    import json

    doc = policy.statements(json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:Get*",
         "Resource": "arn:aws:s3:::b/pub/*"},
        {"Effect": "Deny", "Principal": {"AWS": ["AK1"]}, "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::b/pub/secret*"},
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::b/cond/*",
         "Condition": {"Bool": {"aws:SecureTransport": "true"}}}]}))
    anon: frozenset[str] = frozenset()
    plain = {"aws:securetransport": ["false"]}
    assert policy.evaluate(doc, "s3:GetObject", "arn:aws:s3:::b/pub/x", anon, plain) == "Allow"
    assert policy.evaluate(doc, "s3:getobject", "arn:aws:s3:::b/pub/x", anon, plain) == "Allow"
    assert policy.evaluate(doc, "s3:PutObject", "arn:aws:s3:::b/pub/x", anon, plain) is None
    assert policy.evaluate(doc, "s3:GetObject", "arn:aws:s3:::b/other", anon, plain) is None
    assert policy.evaluate(doc, "s3:GetObject", "arn:aws:s3:::b/cond/x", anon, plain) is None
    tls = {"aws:securetransport": ["true"]}
    assert policy.evaluate(doc, "s3:GetObject", "arn:aws:s3:::b/cond/x", anon, tls) == "Allow"
    ids = policy.principal_ids("t", "t-canonical", "AK1")
    assert policy.evaluate(doc, "s3:GetObject", "arn:aws:s3:::b/pub/secret1", ids,
                           plain) == "Deny"
    assert policy.evaluate(doc, "s3:GetObject", "arn:aws:s3:::b/pub/secret1", anon,
                           plain) == "Allow"
