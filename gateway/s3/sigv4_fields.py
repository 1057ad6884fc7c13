"""SigV4 request fields, parsed strictly: credential scope, signed headers, request time and
payload mode, each refused with the S3 error AWS answers it with (`SigV4Error`)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"

_PAYLOAD_MODES: dict[str, str] = {
    UNSIGNED_PAYLOAD: "unsigned",
    STREAMING_SIGNED: "streaming-signed",
    STREAMING_UNSIGNED_TRAILER: "streaming-unsigned-trailer",
    STREAMING_SIGNED_TRAILER: "streaming-signed-trailer",
}
_SIGNED_STREAMING = ("streaming-signed", "streaming-signed-trailer")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class SigV4Error(Exception):
    """An authentication failure carrying the S3 error code to answer with.

    Codes: AccessDenied, SignatureDoesNotMatch, InvalidAccessKeyId,
    AuthorizationHeaderMalformed, AuthorizationQueryParametersError, RequestTimeTooSkewed,
    MissingSecurityHeader, XAmzContentSHA256Mismatch, IncompleteBody, InvalidRequest,
    InvalidArgument, InvalidToken. ``details`` holds non-secret debugging fields (for example the
    canonical request and string to sign, as AWS returns them).
    """

    def __init__(self, code: str, message: str, details: Mapping[str, str] | None = None,
                 status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details: dict[str, str] = dict(details or {})
        self.status = status  # None: the code's usual status


def single_header(hdrs: dict[str, list[str]], name: str) -> str | None:
    """The (comma-joined) value of a header, or None when absent."""
    values = hdrs.get(name)
    return None if values is None else ",".join(values)


def parse_auth_fields(rest: str) -> dict[str, str]:
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


def parse_credential(credential: str, code: str) -> tuple[str, str, str, str]:
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
    if not region or not region.isprintable() or not region.isascii():
        raise SigV4Error(code, "The credential is malformed; the region is empty or not "
                         "printable ASCII.")
    if service != "s3":
        raise SigV4Error(
            code,
            f'The credential is malformed; incorrect service "{service}". '
            'This endpoint belongs to "s3".',
        )
    return access_key, date, region, service


def parse_signed_headers(value: str, code: str) -> tuple[str, ...]:
    """Parse the ``;``-separated signed header list; ``host`` must be present."""
    names = tuple(name.strip().lower() for name in value.split(";"))
    if not value or any(not name for name in names):
        raise SigV4Error(code, "The SignedHeaders list is malformed.")
    if "host" not in names:
        raise SigV4Error(code, "The host header must be signed.")
    return names


def require_signed(hdrs: dict[str, list[str]], signed_headers: tuple[str, ...]) -> None:
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


def request_time(hdrs: dict[str, list[str]]) -> tuple[str, datetime]:
    """The request timestamp from x-amz-date, else Date, as (ISO basic string, datetime)."""
    raw = single_header(hdrs, "x-amz-date")
    if raw is not None:
        when = parse_amz_date(raw.strip())
        if when is not None:
            return raw.strip(), when
    else:
        date_header = single_header(hdrs, "date")
        if date_header is not None:
            try:
                parsed = parsedate_to_datetime(date_header)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None:
                when = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
                when = when.astimezone(UTC)
                return when.strftime(AMZ_DATE_FORMAT), when
    raise SigV4Error(
        "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"
    )


_AMZ_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z\Z")


def parse_amz_date(value: str) -> datetime | None:
    """Parse ``YYYYMMDDTHHMMSSZ`` strictly; None when malformed."""
    if len(value) != 16 or not _AMZ_DATE_RE.match(value):
        return None
    try:  # by hand: strptime costs more than the rest of the signature check
        return datetime(int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                        int(value[11:13]), int(value[13:15]), tzinfo=UTC)
    except ValueError:
        return None


def parse_payload_mode(content_sha: str) -> str:
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


def unsigned_context_payload_mode(hdrs: dict[str, list[str]]) -> str:
    """Payload mode for presigned and anonymous requests (no seed signature to chain)."""
    content_sha = single_header(hdrs, "x-amz-content-sha256")
    if content_sha is None:
        return "unsigned"
    mode = parse_payload_mode(content_sha)
    if mode in _SIGNED_STREAMING:
        raise SigV4Error(
            "InvalidRequest",
            "Signed streaming payloads require Authorization header authentication.",
        )
    return mode


def unknown_key(access_key: str) -> SigV4Error:
    """InvalidAccessKeyId for a key we do not know."""
    return SigV4Error(
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist in our records.",
        {"AWSAccessKeyId": access_key},
    )


def unsupported_mechanism() -> SigV4Error:
    """InvalidRequest for SigV2 and other mechanisms we do not accept."""
    return SigV4Error(
        "InvalidRequest",
        "The authorization mechanism you have provided is not supported. "
        "Please use AWS4-HMAC-SHA256.",
    )
