"""SigV2: our verifier accepts exactly what botocore's SigV2 (HmacV1) signer produces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from botocore.auth import HmacV1Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.s3 import sigv2
from gateway.s3.sigv4_fields import SigV4Error

AK, SK = "AKIDEXAMPLE", "secret/key+example"


def _now() -> datetime:
    """The verifier's clock, read when a test runs (botocore signs with the current Date; a
    time read at collection is minutes old by the time a whole suite reaches these tests)."""
    return datetime.now(UTC).replace(microsecond=0)


def _signed(method: str, url: str, headers: dict[str, str]) -> AWSRequest:
    req = AWSRequest(method=method, url=url, headers=headers)
    HmacV1Auth(Credentials(AK, SK)).add_auth(req)
    return req


@pytest.mark.parametrize(("method", "url", "headers"), [
    ("GET", "http://h/bucket/key%20with%20space", {}),
    ("PUT", "http://h/bucket/k?acl", {"Content-Type": "text/plain", "x-amz-acl": "private"}),
    ("GET", "http://h/bucket?versions&prefix=a&max-keys=3", {"x-amz-meta-b": "2 ", "x-amz-meta-a": "1"}),
    ("DELETE", "http://h/bucket/k?versionId=v1&uploadId=u", {}),
    ("PUT", "http://h/bucket", {"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="}),
])
def test_botocore_signatures_verify(method: str, url: str, headers: dict[str, str]) -> None:
    req = _signed(method, url, headers)
    now = _now()
    split = urlsplit(url)
    query = parse_qsl(split.query, keep_blank_values=True)
    auth = sigv2.authenticate(method, split.path, query, dict(req.headers.items()),
                              lambda a: SK if a == AK else None, now, 900, None)
    assert auth.access_key == AK and not auth.anonymous
    with pytest.raises(SigV4Error) as ei:  # any change to what was signed is refused
        sigv2.authenticate("POST" if method != "POST" else "GET", split.path, query,
                           dict(req.headers.items()), lambda a: SK, now, 900, None)
    assert ei.value.code == "SignatureDoesNotMatch"


def test_errors() -> None:
    req = _signed("GET", "http://h/b/k", {})
    now = _now()
    hdrs = dict(req.headers.items())
    with pytest.raises(SigV4Error) as ei:
        sigv2.authenticate("GET", "/b/k", [], hdrs, lambda a: None, now, 900, None)
    assert ei.value.code == "InvalidAccessKeyId"
    late = now + timedelta(hours=1)
    with pytest.raises(SigV4Error) as ei:
        sigv2.authenticate("GET", "/b/k", [], hdrs, lambda a: SK, late, 900, None)
    assert ei.value.code == "RequestTimeTooSkewed"
    with pytest.raises(SigV4Error) as ei:
        sigv2.authenticate("GET", "/b/k", [], {"Authorization": "AWS nocolon"}, lambda a: SK,
                           now, 900, None)
    assert ei.value.code == "InvalidArgument"
    with pytest.raises(SigV4Error) as ei:
        sigv2.authenticate("GET", "/b/k", [], {**hdrs, "Date": "not a date"}, lambda a: SK,
                           now, 900, None)
    assert ei.value.code == "AccessDenied"
    q = [("AWSAccessKeyId", AK), ("Expires", str(int(now.timestamp()) - 1)), ("Signature", "x")]
    with pytest.raises(SigV4Error) as ei:
        sigv2.authenticate("GET", "/b/k", q, {}, lambda a: SK, now, 900, None)
    assert ei.value.code == "AccessDenied"


@pytest.mark.parametrize(("method", "url", "sub"), [
    ("PUT", "http://h/bucket/k", "retention"),
    ("PUT", "http://h/bucket/k", "legal-hold"),
    ("GET", "http://h/bucket/k", "retention"),
    ("GET", "http://h/bucket", "object-lock"),
    ("GET", "http://h/bucket", "encryption"),
    ("PUT", "http://h/bucket", "publicAccessBlock"),
    ("GET", "http://h/bucket", "policyStatus"),
])
def test_a_signature_never_carries_over_to_a_subresource(method: str, url: str,
                                                         sub: str) -> None:
    """A signature (or presigned URL) for a plain request is refused with a subresource
    added: else a presigned PutObject URL could set a 100-year compliance retention
    (review14b). Every subresource we serve is in the one signed list."""
    req = _signed(method, url, {})
    split = urlsplit(url)
    with pytest.raises(SigV4Error) as ei:
        sigv2.authenticate(method, split.path, [(sub, "")], dict(req.headers.items()),
                           lambda a: SK, _now(), 900, None)
    assert ei.value.code == "SignatureDoesNotMatch"


def test_every_routed_subresource_is_signed() -> None:
    """A query name that selects an operation (gateway/s3/router.py) is in the signed list,
    so no SigV2 signature (or presigned URL) of one operation is valid for another: a
    presigned ListObjects URL with `&policyStatus` added was GetBucketPolicyStatus."""
    from gateway.s3 import router

    routed = set(router._BUCKET_SUBRESOURCES) | set(router._OBJECT_SUBRESOURCES)
    assert routed - sigv2.SUBRESOURCES == set()
