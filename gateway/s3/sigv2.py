"""AWS Signature Version 2 for S3: `Authorization: AWS AKID:signature` and query-string auth
(`AWSAccessKeyId`, `Expires`, `Signature`), as AWS's "Signing and authenticating REST
requests" describes them. Sans-I/O, like `gateway.s3.sigv4`.

StringToSign = method, Content-MD5, Content-Type, Date (or the query's Expires; empty when
x-amz-date is sent), the canonical x-amz-* headers, and the canonical resource: the bucket (for
virtual-hosted requests), the raw path, and the subresources clients sign (AWS's list plus the
ones botocore adds), sorted. The signature is base64 HMAC-SHA1 under the secret, compared in
constant time. Header requests must be within the SigV4 clock skew; query requests expire at
`Expires` (epoch seconds).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from gateway.s3.http import ascii_digits, digits_int
from gateway.s3.sigv4 import AuthResult, refuse_session_token, require_one_mechanism
from gateway.s3.sigv4_fields import SigV4Error

# What the canonical resource signs. AWS documents acl, lifecycle, location, logging,
# notification, partNumber, policy, requestPayment, uploadId, uploads, versionId, versioning,
# versions, website and the response-* overrides; botocore (HmacV1Auth.QSAOfInterest) signs
# more. Every subresource that selects an operation here (gateway/s3/router.py) is signed
# too, so a signature never carries over to another operation (review14b; Ceph RGW signs
# policyStatus, publicAccessBlock, encryption and object-lock the same way): a SigV2 client
# that leaves one unsigned (botocore: retention, legal-hold, encryption, publicAccessBlock,
# ownershipControls, attributes, policyStatus) is refused and should sign with SigV4.
SUBRESOURCES = frozenset({
    "accelerate", "acl", "analytics", "cors", "delete", "inventory", "lifecycle", "location",
    "logging", "metrics", "notification", "object-lock", "partNumber", "policy",
    "publicAccessBlock", "ownershipControls", "replication", "requestPayment", "restore",
    "retention", "legal-hold", "select", "select-type", "tagging", "torrent", "uploadId",
    "uploads", "versionId", "versioning", "versions", "website", "encryption", "attributes",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires",
    "policyStatus", "intelligent-tiering", "metadataTable", "metadataConfiguration",
    "metadataInventoryTable", "metadataJournalTable", "abac", "session", "renameObject",
})


def is_sigv2(headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    """Whether a request is signed with SigV2 (header or query string)."""
    auth = headers.get("Authorization", "")
    return auth.startswith("AWS ") or ("Signature" in query and "AWSAccessKeyId" in query
                                       and "X-Amz-Algorithm" not in query)


def access_key_of(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    auth = headers.get("Authorization", "")
    if auth.startswith("AWS "):
        return auth[4:].rsplit(":", 1)[0].strip() or None
    return query.get("AWSAccessKeyId")


def canonical_resource(raw_path: str, query: list[tuple[str, str]],
                       virtual_bucket: str | None, bucket_slash: bool = False) -> str:
    """`bucket_slash`: sign a path-style bucket request as "/bucket/" (botocore's S3 client
    does; AWS's own examples and other clients sign "/bucket")."""
    path = raw_path.split("?", 1)[0] or "/"
    if virtual_bucket:
        path = "/" + virtual_bucket + path
    elif bucket_slash:
        path += "/"
    subs = sorted((k, v) for k, v in query if k in SUBRESOURCES)
    if subs:
        path += "?" + "&".join(k if v == "" else f"{k}={v}" for k, v in subs)
    return path


def string_to_sign(method: str, raw_path: str, query: list[tuple[str, str]],
                   headers: Mapping[str, str], date_line: str,
                   virtual_bucket: str | None, bucket_slash: bool = False) -> str:
    amz: dict[str, list[str]] = {}
    for name, value in headers.items():
        low = name.lower().strip()
        if low.startswith("x-amz-"):
            amz.setdefault(low, []).append(" ".join(value.split()))
    lines = [method.upper(), headers.get("Content-MD5", ""), headers.get("Content-Type", ""),
             date_line]
    lines += [f"{k}:{','.join(v)}" for k, v in sorted(amz.items())]
    lines.append(canonical_resource(raw_path, query, virtual_bucket, bucket_slash))
    return "\n".join(lines)


def _sign(secret: str, text: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), text.encode("utf-8", "surrogateescape"),
                                     hashlib.sha1).digest()).decode()


def _check(secret: str, given: str, access_key: str, method: str, raw_path: str,
           query: list[tuple[str, str]], headers: Mapping[str, str], date_line: str,
           virtual_bucket: str | None) -> None:
    """Constant-time check of the signature over the request's string to sign (and, for a
    path-style bucket request, over its "/bucket/" variant)."""
    path = raw_path.split("?", 1)[0]
    variants = [False]
    if not virtual_bucket and path.count("/") == 1 and path != "/":
        variants.append(True)
    text = ""
    ok = False
    for slash in variants:
        text = string_to_sign(method, raw_path, query, headers, date_line, virtual_bucket,
                              slash)
        ok |= hmac.compare_digest(_sign(secret, text).encode(), given.encode())
    if not ok:
        raise SigV4Error("SignatureDoesNotMatch", "The request signature we calculated does "
                         "not match the signature you provided. Check your key and signing "
                         "method.", {"AWSAccessKeyId": access_key, "StringToSign": text,
                                     "SignatureProvided": given})


def _result(access_key: str, signature: str, presigned: bool) -> AuthResult:
    return AuthResult(access_key=access_key, region="", service="s3", signed_headers=(),
                      payload_mode="unsigned", signature=signature, signing_key=b"",
                      amz_date="", scope="", presigned=presigned, anonymous=False)


def _http_date(value: str) -> datetime | None:
    try:
        d = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if d is None or d.year < 1970:
        return None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def authenticate(method: str, raw_path: str, query: list[tuple[str, str]],
                 headers: Mapping[str, str], lookup_secret: Callable[[str], str | None],
                 now: datetime, max_skew_s: int, virtual_bucket: str | None) -> AuthResult:
    """Verify a SigV2 request (header or query); SigV4Error carries AWS's error code."""
    auth = headers.get("Authorization")
    qnames = {name for name, _ in query}
    require_one_mechanism(auth, qnames)
    refuse_session_token(",".join(v for k, v in headers.items()
                                  if k.lower() == "x-amz-security-token"), query)
    if auth is not None:
        ak, sep, given = auth[4:].strip().rpartition(":")
        if not sep or not ak or not given:
            raise SigV4Error("InvalidArgument", "AWS authorization header is invalid.  "
                             "Expected AwsAccessKeyId:signature")
        if "x-amz-date" in {k.lower() for k in headers}:
            raw_date = next(v for k, v in headers.items() if k.lower() == "x-amz-date")
            date_line = ""
        else:
            raw_date = headers.get("Date", "")
            date_line = raw_date
        when = _http_date(raw_date) if raw_date else None
        if when is None:
            raise SigV4Error("AccessDenied", "AWS authentication requires a valid Date or "
                             "x-amz-date header")
        if abs((now - when).total_seconds()) > max_skew_s:
            raise SigV4Error("RequestTimeTooSkewed", "The difference between the request time "
                             "and the current time is too large.",
                             {"RequestTime": raw_date,
                              "ServerTime": now.strftime("%Y-%m-%dT%H:%M:%SZ")})
        secret = lookup_secret(ak)
        if secret is None:
            raise SigV4Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does "
                             "not exist in our records.", {"AWSAccessKeyId": ak})
        _check(secret, given, ak, method, raw_path, query, headers, date_line, virtual_bucket)
        return _result(ak, given, presigned=False)
    params = dict(query)
    ak, given, expires = params.get("AWSAccessKeyId", ""), params.get("Signature", ""), \
        params.get("Expires")
    if expires is None or not ascii_digits(expires):
        raise SigV4Error("AccessDenied", "Query-string authentication requires the Signature, "
                         "Expires and AWSAccessKeyId parameters")
    if now.timestamp() > digits_int(expires):
        raise SigV4Error("AccessDenied", "Request has expired",
                         {"Expires": datetime.fromtimestamp(digits_int(expires), UTC).strftime(
                             "%Y-%m-%dT%H:%M:%SZ"),
                          "ServerTime": now.strftime("%Y-%m-%dT%H:%M:%SZ")})
    secret = lookup_secret(ak)
    if secret is None:
        raise SigV4Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not "
                         "exist in our records.", {"AWSAccessKeyId": ak})
    rest = [(k, v) for k, v in query if k not in ("AWSAccessKeyId", "Signature", "Expires")]
    _check(secret, given, ak, method, raw_path, rest, headers, expires, virtual_bucket)
    return _result(ak, given, presigned=True)
