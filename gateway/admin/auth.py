"""Authentication of admin API requests: SigV4 (service "s3") with an admin-role key.

The admin API reuses the S3 SigV4 verifier; only credentials whose role is "admin" pass.
Tenant keys get 403, unsigned or badly signed requests 401/403, with a JSON error body.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from aiohttp import web

from gateway.s3.sigv4 import SigV4Error, authenticate
from storage.tenants import Credential, TenantService

MAX_BODY_BYTES = 64 * 1024


class AdminError(Exception):
    """An admin API failure: HTTP status, a stable code and a one-line message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


async def authenticate_admin(request: web.Request, tenants: TenantService,
                             max_skew_s: int) -> tuple[Credential, bytes]:
    """Verify the signature and the admin role; return the credential and the body."""
    ak = _access_key(request)
    cred = await tenants.credential(ak) if ak else None
    try:
        auth = authenticate(request.method, request.raw_path, list(request.query.items()),
                            request.headers,
                            lambda a: cred.secret_key if cred and a == cred.access_key else None,
                            datetime.now(UTC), max_skew_s)
    except SigV4Error as exc:
        status = 403 if exc.code in ("SignatureDoesNotMatch", "AccessDenied",
                                     "InvalidAccessKeyId", "RequestTimeTooSkewed") else 400
        raise AdminError(status, exc.code, exc.message) from None
    if auth.anonymous or cred is None:
        raise AdminError(401, "MissingAuthentication", "admin requests must be signed")
    if cred.role != "admin":
        raise AdminError(403, "AccessDenied", "this access key is not an admin key")
    body = await _read_body(request)
    mode = auth.payload_mode
    if mode.startswith("sha256:"):
        if hashlib.sha256(body).hexdigest() != mode[7:]:
            raise AdminError(400, "XAmzContentSHA256Mismatch",
                             "the body does not match x-amz-content-sha256")
    elif body and mode != "unsigned":
        raise AdminError(400, "InvalidRequest", "admin bodies must be plain JSON")
    return cred, body


def _access_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    marker = "Credential="
    i = auth.find(marker)
    if i >= 0:
        return auth[i + len(marker):].split("/", 1)[0] or None
    cred = request.query.get("X-Amz-Credential")
    return cred.split("/", 1)[0] if cred else None


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise AdminError(413, "EntityTooLarge", f"admin bodies are at most {MAX_BODY_BYTES} bytes")
    out = bytearray()
    while True:
        chunk = await request.content.read(16 * 1024)
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > MAX_BODY_BYTES:
            raise AdminError(413, "EntityTooLarge",
                             f"admin bodies are at most {MAX_BODY_BYTES} bytes")
