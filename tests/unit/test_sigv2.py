"""SigV2: our verifier accepts exactly what botocore's SigV2 (HmacV1) signer produces."""

from __future__ import annotations

import base64
import hashlib
import hmac
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


# Every subresource botocore signs, and those it leaves out (retention, legal-hold, encryption,
# publicAccessBlock, ownershipControls, attributes): a signature by botocore's HmacV1Auth over
# a request carrying it verifies (it once failed for the second group).
@pytest.mark.parametrize("sub", sorted(HmacV1Auth.QSAOfInterest) + [
    "retention", "legal-hold", "encryption", "publicAccessBlock", "ownershipControls",
    "attributes", "policyStatus"])
def test_every_subresource_botocore_signs_or_omits_verifies(sub: str) -> None:
    value = "" if not sub.startswith("response-") and sub not in (
        "versionId", "uploadId", "partNumber") else "v%C3%A9 1"
    url = f"http://h/bucket/k?{sub}" + (f"={value}" if value else "") + "&max-keys=2"
    req = _signed("PUT", url, {"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="})
    split = urlsplit(url)
    query = parse_qsl(split.query, keep_blank_values=True)
    auth = sigv2.authenticate("PUT", split.path, query, dict(req.headers.items()),
                              lambda a: SK, _now(), 900, None)
    assert auth.access_key == AK


def _minio_go_signature(method: str, resource: str, date: str) -> str:
    """What minio-go's SigV2 signer sends: it signs encryption, legal-hold and retention too
    (its resourceList, the same as MinIO's server cmd/signature-v2.go)."""
    text = f"{method}\n\n\n{date}\n{resource}"
    return base64.b64encode(hmac.new(SK.encode(), text.encode(), hashlib.sha1).digest()).decode()


@pytest.mark.parametrize("sub", ["retention", "legal-hold", "encryption"])
def test_minio_go_signatures_verify_and_a_dropped_subresource_does_not(sub: str) -> None:
    now = _now()
    date = now.strftime("%a, %d %b %Y %H:%M:%S GMT")
    for resource in (f"/b/k?{sub}", "/b/k"):  # minio-go's form, and botocore's
        hdrs = {"Date": date,
                "Authorization": f"AWS {AK}:{_minio_go_signature('GET', resource, date)}"}
        sigv2.authenticate("GET", "/b/k", [(sub, "")], hdrs, lambda a: SK, now, 900, None)
    # a subresource every client signs cannot be dropped: a signature over "/b/k" does not
    # authorize "/b/k?acl" (nor over "/b/k?acl" a plain GET)
    for signed, sent in (("/b/k", [("acl", "")]), ("/b/k?acl", [])):
        hdrs = {"Date": date,
                "Authorization": f"AWS {AK}:{_minio_go_signature('GET', signed, date)}"}
        with pytest.raises(SigV4Error) as ei:
            sigv2.authenticate("GET", "/b/k", sent, hdrs, lambda a: SK, now, 900, None)
        assert ei.value.code == "SignatureDoesNotMatch"
