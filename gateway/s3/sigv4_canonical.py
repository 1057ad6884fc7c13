"""SigV4 canonical form: the canonical request, the string to sign and the signing key.

Pure functions shared by the verifier (`gateway.s3.sigv4`) and the client-side signer
(`gateway.s3.sigv4_sign`), so the two can never disagree on what is signed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote_to_bytes

ALGORITHM = "AWS4-HMAC-SHA256"
_URI_SAFE = "-_.~"


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


def canonical_request(
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


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """The SigV4 string to sign over a canonical request (header bytes that are not UTF-8,
    which aiohttp hands over as surrogates, are signed as the bytes they were)."""
    return "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()]
    )


def normalize_headers(headers: Mapping[str, str]) -> dict[str, list[str]]:
    """Lowercase names; keep every value of repeated headers in order."""
    out: dict[str, list[str]] = {}
    for name, value in headers.items():
        out.setdefault(name.strip().lower(), []).append(value)
    return out


def _encode(value: str) -> str:
    """URI-encode per SigV4 (unreserved characters only stay literal)."""
    return quote(value.encode("utf-8", "surrogateescape"), safe=_URI_SAFE)


def _hmac(key: bytes, msg: str) -> bytes:
    """HMAC-SHA256 of a UTF-8 string."""
    return hmac.digest(key, msg.encode("utf-8"), "sha256")
