"""AWS Signature Version 4 for S3: request authentication.

Sans-I/O: callers hand in the method, raw path, decoded query pairs and headers; aws-chunked
bodies are decoded by `gateway.s3.chunked`. Nothing here touches sockets or clocks.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.s3.http import digits_int
from gateway.s3.sigv4_canonical import (
    ALGORITHM,
    canonical_query,
    canonical_request,
    normalize_headers,
    signing_key,
    string_to_sign,
)
from gateway.s3.sigv4_fields import (
    AMZ_DATE_FORMAT,
    UNSIGNED_PAYLOAD,
    SigV4Error,
    parse_amz_date,
    parse_auth_fields,
    parse_credential,
    parse_payload_mode,
    parse_signed_headers,
    request_time,
    require_signed,
    single_header,
    unknown_key,
    unsigned_context_payload_mode,
    unsupported_mechanism,
)

MAX_PRESIGN_EXPIRES_S = 604800

_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_PRESIGN_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
_PRESIGN_MARKERS = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"})


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


def authenticate(
    method: str,
    raw_path: str,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    max_skew_s: int = 900,
    region: str | None = None,
) -> AuthResult:
    """Verify a request's SigV4 header or presigned-query auth; anonymous if it has none.

    ``query`` holds percent-decoded pairs in wire order (as ``request.query`` gives them);
    ``headers`` may be a dict or a multidict and is looked up case-insensitively. With
    ``region``, a credential scoped to another region is refused as AWS refuses it.
    """
    hdrs = normalize_headers(headers)
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    authorization = single_header(hdrs, "authorization")
    qnames = {name for name, _ in query}
    require_one_mechanism(authorization, qnames)
    refuse_session_token(single_header(hdrs, "x-amz-security-token"), query)
    has_presign = bool(qnames & _PRESIGN_MARKERS)
    if authorization is not None:
        return _authenticate_header(
            method, raw_path, query, hdrs, authorization, lookup_secret, now, max_skew_s,
            region,
        )
    if has_presign:
        return _authenticate_presigned(
            method, raw_path, query, hdrs, lookup_secret, now, max_skew_s, region
        )
    if "Signature" in qnames and "AWSAccessKeyId" in qnames:
        raise unsupported_mechanism()
    return AuthResult(
        access_key="",
        region="",
        service="",
        signed_headers=(),
        payload_mode=unsigned_context_payload_mode(hdrs),
        signature="",
        signing_key=b"",
        amz_date="",
        scope="",
        presigned=False,
        anonymous=True,
    )


def require_one_mechanism(authorization: str | None, qnames: set[str]) -> None:
    """Refuse a request that carries more than one signature: of the Authorization header
    (V2 or V4), the V4 presigned query (X-Amz-Algorithm...) and the V2 one (Signature with
    AWSAccessKeyId), only one is checked, so a second would be accepted and ignored. AWS
    answers 400 InvalidArgument naming the Authorization header."""
    used = (authorization is not None) + bool(qnames & _PRESIGN_MARKERS) + (
        "Signature" in qnames and "AWSAccessKeyId" in qnames)
    if used > 1:
        raise SigV4Error(
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
            {"ArgumentName": "Authorization", "ArgumentValue": authorization}
            if authorization is not None else None,
        )


def refuse_session_token(header: str | None, query: list[tuple[str, str]]) -> None:
    """A session token (x-amz-security-token, or the same name in a presigned URL's query)
    names temporary credentials, which this service never issues: AWS answers a token sent
    with a long-term key 400 InvalidToken, where ignoring it served the request. An empty
    one names none (boto3 sends it in a presigned POST made with aws_session_token="";
    MinIO treats it as absent), so it is no token."""
    token = header or next((value for name, value in query
                            if name.lower() == "x-amz-security-token" and value), None)
    if token:  # AWS echoes the token it refused as Token-0
        raise SigV4Error("InvalidToken", "The provided token is malformed or otherwise invalid.",
                         {"Token-0": token})


def _authenticate_header(
    method: str,
    raw_path: str,
    query: list[tuple[str, str]],
    hdrs: dict[str, list[str]],
    authorization: str,
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    max_skew_s: int,
    expected_region: str | None,
) -> AuthResult:
    """Authorization-header flavour of :func:`authenticate`."""
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise unsupported_mechanism()
    fields = parse_auth_fields(rest)
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
    access_key, date, region, service = parse_credential(
        credential, "AuthorizationHeaderMalformed"
    )
    _check_region(region, expected_region, "AuthorizationHeaderMalformed",
                  "The authorization header is malformed;")
    if not _SIGNATURE.fullmatch(signature):
        raise SigV4Error(
            "AuthorizationHeaderMalformed",
            "The authorization header is malformed; the signature is not 64 lowercase hex.",
        )
    signed_headers = parse_signed_headers(signed_list, "AuthorizationHeaderMalformed")
    amz_date, when = request_time(hdrs)
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
            {"RequestTime": amz_date, "ServerTime": now.strftime(AMZ_DATE_FORMAT)},
        )
    content_sha = single_header(hdrs, "x-amz-content-sha256")
    if content_sha is None:
        raise SigV4Error(
            "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    payload_mode = parse_payload_mode(content_sha)
    require_signed(hdrs, signed_headers)
    secret = lookup_secret(access_key)
    if secret is None:
        raise unknown_key(access_key)
    key = signing_key(secret, date, region, service)
    scope = f"{date}/{region}/{service}/aws4_request"
    canonical = canonical_request(
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
    expected_region: str | None,
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
    access_key, date, region, service = parse_credential(
        params["X-Amz-Credential"], "AuthorizationQueryParametersError"
    )
    _check_region(region, expected_region, "AuthorizationQueryParametersError",
                  "Error parsing the X-Amz-Credential parameter;")
    amz_date = params["X-Amz-Date"]
    when = parse_amz_date(amz_date)
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
    expires = digits_int(expires_raw)
    if expires > MAX_PRESIGN_EXPIRES_S:
        raise _expiry_error("X-Amz-Expires must be less than a week (in seconds); that is, "
                            "the given X-Amz-Expires must be less than 604800 seconds")
    signature = params["X-Amz-Signature"]
    if not _SIGNATURE.fullmatch(signature):
        raise _query_error("X-Amz-Signature must be 64 lowercase hex characters.")
    signed_headers = parse_signed_headers(
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
                "Expires": (when + timedelta(seconds=expires)).strftime(AMZ_DATE_FORMAT),
                "ServerTime": now.strftime(AMZ_DATE_FORMAT),
            },
        )
    payload_mode = unsigned_context_payload_mode(hdrs)
    require_signed(hdrs, signed_headers)
    secret = lookup_secret(access_key)
    if secret is None:
        raise unknown_key(access_key)
    key = signing_key(secret, date, region, service)
    scope = f"{date}/{region}/{service}/aws4_request"
    canonical = canonical_request(
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


def _check_region(region: str, expected: str | None, code: str, lead: str) -> None:
    """A credential scoped to another region than the endpoint's: AWS refuses it (400, with
    the region to sign for in <Region>, which SDKs read to sign again), where accepting it
    took a scope the request did not claim."""
    if expected is not None and region != expected:
        raise SigV4Error(code, f"{lead} the region '{region}' is wrong; expecting "
                         f"'{expected}'", {"Region": expected})


def _check_signature(
    key: bytes, amz_date: str, scope: str, canonical: str, provided: str, access_key: str
) -> None:
    """Compare the provided signature with the one computed over ``canonical``."""
    to_sign = string_to_sign(amz_date, scope, canonical)
    expected = hmac.digest(key, to_sign.encode("utf-8"), "sha256").hex()
    if not hmac.compare_digest(expected, provided):
        raise SigV4Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            {
                "AWSAccessKeyId": access_key,
                "StringToSign": to_sign,
                "SignatureProvided": provided,
                "CanonicalRequest": shown_canonical(canonical),
            },
        )


WITHHELD = "(withheld)"


def shown_canonical(canonical: str) -> str:
    """The canonical request as a SignatureDoesNotMatch error shows it: a signed Cookie
    header's value withheld. The browser adds the cookies of the whole host, every port, so
    a page served by this S3 port that listed `cookie` in SignedHeaders read the web
    console's HttpOnly session back from the error (`gateway.console`). Only header lines
    can start "cookie:" (the query line is percent-encoded)."""
    return "\n".join("cookie:" + WITHHELD if line.startswith("cookie:") else line
                     for line in canonical.split("\n"))


def _query_error(message: str) -> SigV4Error:
    """AuthorizationQueryParametersError, as AWS answers bad presigned parameters."""
    return SigV4Error("AuthorizationQueryParametersError", message)


def _expiry_error(message: str) -> SigV4Error:
    """A presigned URL whose X-Amz-Expires is out of range: never valid, so 403 (as S3 answers
    it and ceph/s3-tests checks), with AWS's AuthorizationQueryParametersError message."""
    return SigV4Error("AuthorizationQueryParametersError", message, status=403)
