"""AWS Signature Version 4 for S3: request authentication.

Sans-I/O: callers hand in the method, raw path, decoded query pairs and headers; aws-chunked
bodies are decoded by `gateway.s3.chunked`. Nothing here touches sockets or clocks.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote_to_bytes

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_PRESIGN_EXPIRES_S = 604800

_PAYLOAD_MODES: dict[str, str] = {
    UNSIGNED_PAYLOAD: "unsigned",
    STREAMING_SIGNED: "streaming-signed",
    STREAMING_UNSIGNED_TRAILER: "streaming-unsigned-trailer",
    STREAMING_SIGNED_TRAILER: "streaming-signed-trailer",
}
_SIGNED_STREAMING = ("streaming-signed", "streaming-signed-trailer")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_PRESIGN_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
_PRESIGN_MARKERS = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"})
_URI_SAFE = "-_.~"


class SigV4Error(Exception):
    """An authentication failure carrying the S3 error code to answer with.

    Codes: AccessDenied, SignatureDoesNotMatch, InvalidAccessKeyId,
    AuthorizationHeaderMalformed, AuthorizationQueryParametersError, RequestTimeTooSkewed,
    MissingSecurityHeader, XAmzContentSHA256Mismatch, IncompleteBody, InvalidRequest,
    InvalidArgument. ``details`` holds non-secret debugging fields (for example the
    canonical request and string to sign, as AWS returns them).
    """

    def __init__(self, code: str, message: str, details: Mapping[str, str] | None = None,
                 status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details: dict[str, str] = dict(details or {})
        self.status = status  # None: the code's usual status


@dataclass(frozen=True)
class AuthResult:
    """Outcome of a successful :func:`authenticate` call."""

    access_key: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    # 'unsigned' | 'sha256:<hex>' | 'streaming-signed' | 'streaming-unsigned-trailer'
    # | 'streaming-signed-trailer'
    payload_mode: str
    signature: str
    signing_key: bytes
    amz_date: str
    scope: str
    presigned: bool
    anonymous: bool

    def __repr__(self) -> str:
        """Keep the derived key out of logs."""
        return (
            f"AuthResult(access_key={self.access_key!r}, region={self.region!r}, "
            f"payload_mode={self.payload_mode!r}, presigned={self.presigned}, "
            f"anonymous={self.anonymous})"
        )


@functools.lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """Derive the SigV4 signing key for ``date`` (YYYYMMDD), region and service (remembered:
    four HMACs per request otherwise; the key changes daily, as AWS's own clients cache it)."""
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.~/-]*\Z")  # what re-encoding leaves as it is


def canonical_uri(raw_path: str) -> str:
    """Canonical URI for S3: the wire path re-encoded per segment, never double-encoded
    (a path of unreserved characters only, the usual one, is its own encoding)."""
    path = raw_path.split("?", 1)[0] or "/"
    if _PLAIN_PATH.match(path):
        return path
    segments = path.split("/")
    return "/".join(
        quote(unquote_to_bytes(seg.encode("utf-8", "surrogateescape")), safe=_URI_SAFE)
        for seg in segments
    )


def canonical_query(query: Iterable[tuple[str, str]], exclude_signature: bool = False) -> str:
    """Canonical query string from decoded (name, value) pairs, sorted after encoding."""
    pairs = sorted(
        (_encode(name), _encode(value))
        for name, value in query
        if not (exclude_signature and name == "X-Amz-Signature")
    )
    return "&".join(f"{name}={value}" for name, value in pairs)


def authenticate(
    method: str,
    raw_path: str,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    max_skew_s: int = 900,
) -> AuthResult:
    """Verify a request's SigV4 header or presigned-query auth; anonymous if it has none.

    ``query`` holds percent-decoded pairs in wire order (as ``request.query`` gives them);
    ``headers`` may be a dict or a multidict and is looked up case-insensitively.
    """
    hdrs = _normalize_headers(headers)
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    authorization = _single(hdrs, "authorization")
    qnames = {name for name, _ in query}
    has_presign = bool(qnames & _PRESIGN_MARKERS)
    if authorization is not None and has_presign:
        raise SigV4Error(
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
        )
    if authorization is not None:
        return _authenticate_header(
            method, raw_path, query, hdrs, authorization, lookup_secret, now, max_skew_s
        )
    if has_presign:
        return _authenticate_presigned(
            method, raw_path, query, hdrs, lookup_secret, now, max_skew_s
        )
    if "Signature" in qnames and "AWSAccessKeyId" in qnames:
        raise _unsupported_mechanism()
    return AuthResult(
        access_key="",
        region="",
        service="",
        signed_headers=(),
        payload_mode=_unsigned_context_payload_mode(hdrs),
        signature="",
        signing_key=b"",
        amz_date="",
        scope="",
        presigned=False,
        anonymous=True,
    )


def _authenticate_header(
    method: str,
    raw_path: str,
    query: list[tuple[str, str]],
    hdrs: dict[str, list[str]],
    authorization: str,
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    max_skew_s: int,
) -> AuthResult:
    """Authorization-header flavour of :func:`authenticate`."""
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _unsupported_mechanism()
    fields = _parse_auth_fields(rest)
    credential, signed_list, signature = (
        fields.get("Credential"),
        fields.get("SignedHeaders"),
        fields.get("Signature"),
    )
    if credential is None or signed_list is None or signature is None:
        missing = [k for k in ("Credential", "SignedHeaders", "Signature") if fields.get(k) is None]
        raise SigV4Error(
            "AuthorizationHeaderMalformed",
            f"The authorization header is malformed; missing {', '.join(missing)}.",
        )
    access_key, date, region, service = _parse_credential(
        credential, "AuthorizationHeaderMalformed"
    )
    if not _SIGNATURE.fullmatch(signature):
        raise SigV4Error(
            "AuthorizationHeaderMalformed",
            "The authorization header is malformed; the signature is not 64 lowercase hex.",
        )
    signed_headers = _parse_signed_headers(signed_list, "AuthorizationHeaderMalformed")
    amz_date, when = _request_time(hdrs)
    if amz_date[:8] != date:
        raise SigV4Error(
            "AuthorizationHeaderMalformed",
            f"The authorization header is malformed; Invalid credential date. "
            f"Date is not the same as X-Amz-Date: {date}.",
        )
    if abs((now - when).total_seconds()) > max_skew_s:
        raise SigV4Error(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            {"RequestTime": amz_date, "ServerTime": now.strftime(_AMZ_DATE_FORMAT)},
        )
    content_sha = _single(hdrs, "x-amz-content-sha256")
    if content_sha is None:
        raise SigV4Error(
            "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    payload_mode = _payload_mode(content_sha)
    _require_signed(hdrs, signed_headers)
    secret = lookup_secret(access_key)
    if secret is None:
        raise _unknown_key(access_key)
    key = signing_key(secret, date, region, service)
    scope = f"{date}/{region}/{service}/aws4_request"
    canonical = _canonical_request(
        method, raw_path, canonical_query(query), hdrs, signed_headers, content_sha
    )
    _check_signature(key, amz_date, scope, canonical, signature, access_key)
    return AuthResult(
        access_key=access_key,
        region=region,
        service=service,
        signed_headers=signed_headers,
        payload_mode=payload_mode,
        signature=signature,
        signing_key=key,
        amz_date=amz_date,
        scope=scope,
        presigned=False,
        anonymous=False,
    )


def _authenticate_presigned(
    method: str,
    raw_path: str,
    query: list[tuple[str, str]],
    hdrs: dict[str, list[str]],
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    max_skew_s: int,
) -> AuthResult:
    """Presigned-URL (query string) flavour of :func:`authenticate`."""
    params: dict[str, str] = {}
    for name, value in query:
        if name in _PRESIGN_PARAMS:
            if name in params:
                raise _query_error(f"{name} may only be specified once.")
            params[name] = value
    if len(params) != len(_PRESIGN_PARAMS):
        raise _query_error(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
            "and X-Amz-Expires parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise _query_error('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    access_key, date, region, service = _parse_credential(
        params["X-Amz-Credential"], "AuthorizationQueryParametersError"
    )
    amz_date = params["X-Amz-Date"]
    when = _parse_amz_date(amz_date)
    if when is None:
        raise _query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if amz_date[:8] != date:
        raise _query_error(
            f'Invalid credential date "{date}". This date is not the same as X-Amz-Date.'
        )
    expires_raw = params["X-Amz-Expires"]
    if expires_raw.startswith("-") and expires_raw[1:].isdigit() and expires_raw.isascii():
        raise _expiry_error("X-Amz-Expires must be non-negative")
    if not expires_raw.isdigit() or not expires_raw.isascii():
        raise _query_error("X-Amz-Expires should be a number")
    expires = int(expires_raw)
    if expires > MAX_PRESIGN_EXPIRES_S:
        raise _expiry_error("X-Amz-Expires must be less than a week (in seconds); that is, "
                            "the given X-Amz-Expires must be less than 604800 seconds")
    signature = params["X-Amz-Signature"]
    if not _SIGNATURE.fullmatch(signature):
        raise _query_error("X-Amz-Signature must be 64 lowercase hex characters.")
    signed_headers = _parse_signed_headers(
        params["X-Amz-SignedHeaders"], "AuthorizationQueryParametersError"
    )
    if (when - now).total_seconds() > max_skew_s:
        raise SigV4Error("AccessDenied", "Request is not valid yet")
    if now > when + timedelta(seconds=expires):
        raise SigV4Error(
            "AccessDenied",
            "Request has expired",
            {
                "X-Amz-Expires": str(expires),
                "Expires": (when + timedelta(seconds=expires)).strftime(_AMZ_DATE_FORMAT),
                "ServerTime": now.strftime(_AMZ_DATE_FORMAT),
            },
        )
    payload_mode = _unsigned_context_payload_mode(hdrs)
    _require_signed(hdrs, signed_headers)
    secret = lookup_secret(access_key)
    if secret is None:
        raise _unknown_key(access_key)
    key = signing_key(secret, date, region, service)
    scope = f"{date}/{region}/{service}/aws4_request"
    canonical = _canonical_request(
        method,
        raw_path,
        canonical_query(query, exclude_signature=True),
        hdrs,
        signed_headers,
        UNSIGNED_PAYLOAD,
    )
    _check_signature(key, amz_date, scope, canonical, signature, access_key)
    return AuthResult(
        access_key=access_key,
        region=region,
        service=service,
        signed_headers=signed_headers,
        payload_mode=payload_mode,
        signature=signature,
        signing_key=key,
        amz_date=amz_date,
        scope=scope,
        presigned=True,
        anonymous=False,
    )


def _canonical_request(
    method: str,
    raw_path: str,
    canonical_qs: str,
    hdrs: dict[str, list[str]],
    signed_headers: tuple[str, ...],
    payload_hash: str,
) -> str:
    """Assemble the SigV4 canonical request."""
    lines = [method.upper(), canonical_uri(raw_path), canonical_qs]
    for name in signed_headers:
        value = ",".join(" ".join(v.split()) for v in hdrs.get(name, []))
        lines.append(f"{name}:{value}")
    lines.append("")
    lines.append(";".join(signed_headers))
    lines.append(payload_hash)
    return "\n".join(lines)


def _check_signature(
    key: bytes, amz_date: str, scope: str, canonical: str, provided: str, access_key: str
) -> None:
    """Compare the provided signature with the one computed over ``canonical``."""
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()]
    )
    expected = hmac.digest(key, string_to_sign.encode("utf-8"), "sha256").hex()
    if not hmac.compare_digest(expected, provided):
        raise SigV4Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            {
                "AWSAccessKeyId": access_key,
                "StringToSign": string_to_sign,
                "SignatureProvided": provided,
                "CanonicalRequest": canonical,
            },
        )


def _normalize_headers(headers: Mapping[str, str]) -> dict[str, list[str]]:
    """Lowercase names; keep every value of repeated headers in order."""
    out: dict[str, list[str]] = {}
    for name, value in headers.items():
        out.setdefault(name.strip().lower(), []).append(value)
    return out


def _single(hdrs: dict[str, list[str]], name: str) -> str | None:
    """The (comma-joined) value of a header, or None when absent."""
    values = hdrs.get(name)
    return None if values is None else ",".join(values)


def _parse_auth_fields(rest: str) -> dict[str, str]:
    """Split ``Credential=..., SignedHeaders=..., Signature=...`` into a dict."""
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            if part.strip():
                raise SigV4Error(
                    "AuthorizationHeaderMalformed",
                    "The authorization header is malformed; each component must be name=value.",
                )
            continue
        if name in fields:
            raise SigV4Error(
                "AuthorizationHeaderMalformed",
                f"The authorization header is malformed; {name} appears twice.",
            )
        fields[name] = value.strip()
    return fields


def _parse_credential(credential: str, code: str) -> tuple[str, str, str, str]:
    """Split ``AK/date/region/service/aws4_request``."""
    parts = credential.split("/")
    if len(parts) != 5 or not parts[0] or parts[4] != "aws4_request":
        raise SigV4Error(
            code,
            "The credential is malformed; expecting "
            '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
        )
    access_key, date, region, service = parts[0], parts[1], parts[2], parts[3]
    if len(date) != 8 or not date.isdigit() or not date.isascii():
        raise SigV4Error(code, f'Invalid credential date "{date}".')
    if not region:
        raise SigV4Error(code, "The credential is malformed; the region is empty.")
    if service != "s3":
        raise SigV4Error(
            code,
            f'The credential is malformed; incorrect service "{service}". '
            'This endpoint belongs to "s3".',
        )
    return access_key, date, region, service


def _parse_signed_headers(value: str, code: str) -> tuple[str, ...]:
    """Parse the ``;``-separated signed header list; ``host`` must be present."""
    names = tuple(name.strip().lower() for name in value.split(";"))
    if not value or any(not name for name in names):
        raise SigV4Error(code, "The SignedHeaders list is malformed.")
    if "host" not in names:
        raise SigV4Error(code, "The host header must be signed.")
    return names


def _require_signed(hdrs: dict[str, list[str]], signed_headers: tuple[str, ...]) -> None:
    """Reject x-amz-* headers present on the request but absent from the signature.

    x-amz-content-sha256 is exempt: header auth binds its value through the payload line.
    """
    unsigned = sorted(
        name
        for name in hdrs
        if name.startswith("x-amz-")
        and name != "x-amz-content-sha256"
        and name not in signed_headers
    )
    if unsigned:
        raise SigV4Error(
            "AccessDenied",
            "There were headers present in the request which were not signed",
            {"HeadersNotSigned": ", ".join(unsigned)},
        )


def _request_time(hdrs: dict[str, list[str]]) -> tuple[str, datetime]:
    """The request timestamp from x-amz-date, else Date, as (ISO basic string, datetime)."""
    raw = _single(hdrs, "x-amz-date")
    if raw is not None:
        when = _parse_amz_date(raw.strip())
        if when is not None:
            return raw.strip(), when
    else:
        date_header = _single(hdrs, "date")
        if date_header is not None:
            try:
                parsed = parsedate_to_datetime(date_header)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None:
                when = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
                when = when.astimezone(UTC)
                return when.strftime(_AMZ_DATE_FORMAT), when
    raise SigV4Error(
        "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"
    )


_AMZ_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z\Z")


def _parse_amz_date(value: str) -> datetime | None:
    """Parse ``YYYYMMDDTHHMMSSZ`` strictly; None when malformed."""
    if len(value) != 16 or not _AMZ_DATE_RE.match(value):
        return None
    try:  # by hand: strptime costs more than the rest of the signature check
        return datetime(int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                        int(value[11:13]), int(value[13:15]), tzinfo=UTC)
    except ValueError:
        return None


def _payload_mode(content_sha: str) -> str:
    """Map an x-amz-content-sha256 value to an AuthResult payload mode."""
    mode = _PAYLOAD_MODES.get(content_sha)
    if mode is not None:
        return mode
    if _HEX64.fullmatch(content_sha):
        return "sha256:" + content_sha.lower()
    raise SigV4Error(
        "InvalidArgument",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-* or a valid sha256 value.",
        {"ArgumentName": "x-amz-content-sha256"},
    )


def _unsigned_context_payload_mode(hdrs: dict[str, list[str]]) -> str:
    """Payload mode for presigned and anonymous requests (no seed signature to chain)."""
    content_sha = _single(hdrs, "x-amz-content-sha256")
    if content_sha is None:
        return "unsigned"
    mode = _payload_mode(content_sha)
    if mode in _SIGNED_STREAMING:
        raise SigV4Error(
            "InvalidRequest",
            "Signed streaming payloads require Authorization header authentication.",
        )
    return mode


def _encode(value: str) -> str:
    """URI-encode per SigV4 (unreserved characters only stay literal)."""
    return quote(value.encode("utf-8", "surrogateescape"), safe=_URI_SAFE)


def _hmac(key: bytes, msg: str) -> bytes:
    """HMAC-SHA256 of a UTF-8 string."""
    return hmac.digest(key, msg.encode("utf-8"), "sha256")


def _unknown_key(access_key: str) -> SigV4Error:
    """InvalidAccessKeyId for a key we do not know."""
    return SigV4Error(
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist in our records.",
        {"AWSAccessKeyId": access_key},
    )


def _query_error(message: str) -> SigV4Error:
    """AuthorizationQueryParametersError, as AWS answers bad presigned parameters."""
    return SigV4Error("AuthorizationQueryParametersError", message)


def _expiry_error(message: str) -> SigV4Error:
    """A presigned URL whose X-Amz-Expires is out of range: never valid, so 403 (as S3 answers
    it and ceph/s3-tests checks), with AWS's AuthorizationQueryParametersError message."""
    return SigV4Error("AuthorizationQueryParametersError", message, status=403)


def _unsupported_mechanism() -> SigV4Error:
    """InvalidRequest for SigV2 and other mechanisms we do not accept."""
    return SigV4Error(
        "InvalidRequest",
        "The authorization mechanism you have provided is not supported. "
        "Please use AWS4-HMAC-SHA256.",
    )
