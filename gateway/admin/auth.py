"""Authentication of admin API requests: SigV4 (service "s3") with an admin-role key, or a
web console session.

The admin API reuses the S3 SigV4 verifier; only credentials whose role is "admin" pass.
Tenant keys get 403, unsigned or badly signed requests 401/403, with a JSON error body. Only
the Authorization header is taken (a presigned URL is 403: it lasts up to a week, replays, and
signs no body), and a body must be signed by its SHA-256 (x-amz-content-sha256), never
UNSIGNED-PAYLOAD: an admin body creates keys and changes settings. A header-signed change
(any method but GET/HEAD) is served once (`gateway.admin.once`): the same signed request
again is 403 RequestReplayed in every worker.
An unsigned request carrying the console's session cookie acts as the admin key that logged in
(`gateway.console.sessions`): the session must be live, the key still an active admin key, a
change (any method but GET/HEAD) must carry the session's CSRF token in `X-CSRF-Token`, and no
request may come from another origin's page (`sessions.from_another_origin`: Fetch Metadata,
and `Origin` on every method). Every refusal there is 403.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway.admin import once
from gateway.console.sessions import (
    COOKIE,
    CSRF_HEADER,
    SESSIONS,
    csrf_ok,
    from_another_origin,
)
from gateway.s3.sigv4 import authenticate
from gateway.s3.sigv4_fields import SigV4Error
from storage.access_keys import Credential
from storage.headguard import payload_error_summary
from storage.tenants import TenantService

if TYPE_CHECKING:
    from storage.cluster import Cluster

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024


class AdminError(Exception):
    """An admin API failure: HTTP status, a stable code and a one-line message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


async def authenticate_admin(request: web.Request, cluster: Cluster,
                             ) -> tuple[Credential, bytes]:
    """Verify the signature (or console session) and the admin role, and that a signed
    change is not a replay; return the credential and the body."""
    tenants, max_skew_s = cluster.tenants, cluster.cfg.gateway.max_skew_s
    ak = claimed_key(request)
    token = request.cookies.get(COOKIE)
    if ak is None and token is not None and "Authorization" not in request.headers:
        return await _session_admin(request, tenants, token,
                                    cluster.cfg.gateway.header_timeout_s)
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
    if auth.presigned:  # a week-long, replayable URL whose body nothing signs
        raise AdminError(403, "AccessDenied", "admin requests are signed in the "
                         "Authorization header, not in the query string")
    body = await _read_body(request, cluster.cfg.gateway.header_timeout_s)
    mode = auth.payload_mode
    if mode.startswith("sha256:"):
        if hashlib.sha256(body).hexdigest() != mode[7:]:
            raise AdminError(400, "XAmzContentSHA256Mismatch",
                             "the body does not match x-amz-content-sha256")
    elif body:  # UNSIGNED-PAYLOAD or aws-chunked: whoever relays the request picks the body
        raise AdminError(400, "InvalidRequest", "admin bodies must be plain JSON whose "
                         "SHA-256 is signed as x-amz-content-sha256")
    if request.method not in ("GET", "HEAD"):
        if not await once.claim(cluster.meta, auth.signature, auth.amz_date):
            raise AdminError(403, "RequestReplayed", "this signed request was received "
                             "already (it may have been served: check); a signed change is "
                             "served once: sign it again to "
                             "repeat it (two equal changes signed in the same second need a "
                             "header that differs, e.g. X-Tessera-Nonce)")
        request[once.CLAIMED] = once.claim_key(auth.signature, auth.amz_date)
    return cred, body


async def _session_admin(request: web.Request, tenants: TenantService,
                         token: str, within_s: float) -> tuple[Credential, bytes]:
    """The admin credential a console session acts as, after the session and CSRF checks."""
    store = request.app.get(SESSIONS)
    session = store.find(token, touch=False) if store is not None else None
    if session is None:
        raise AdminError(403, "InvalidSession", "the console session has expired or does not "
                         "exist; log in again")
    if from_another_origin(request):
        raise AdminError(403, "CrossOrigin", "the request comes from another site")
    if request.method not in ("GET", "HEAD"):
        if not csrf_ok(session, request.headers.get(CSRF_HEADER)):
            raise AdminError(403, "InvalidCSRFToken", f"a change needs the session's "
                             f"{CSRF_HEADER} header")
    cred = await tenants.credential(session.who)
    if cred is None or cred.role != "admin":
        assert store is not None
        store.close_all(session.who)
        raise AdminError(403, "InvalidSession", "the key this session logged in with is no "
                         "longer an active admin key; log in again")
    assert store is not None
    store.touch(session)
    return cred, await _read_body(request, within_s)


def claimed_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    marker = "Credential="
    i = auth.find(marker)
    if i >= 0:
        return auth[i + len(marker):].split("/", 1)[0] or None
    cred = request.query.get("X-Amz-Credential")
    return cred.split("/", 1)[0] if cred else None


async def _read_body(request: web.Request, within_s: float) -> bytes:
    """The whole body (at most MAX_BODY_BYTES), within `within_s` (`[gateway]
    header_timeout_s`) in all: a console login's body is read before anyone is known, and
    one byte per few seconds held its connection and task for as long as the client liked.
    Past the deadline 408 RequestTimeout, and the connection closes."""
    try:
        async with asyncio.timeout(within_s):
            return await _read_whole(request)
    except TimeoutError:
        request.content.feed_eof()  # read no more of it: the connection ends after the answer
        request.protocol.close()  # type: ignore[union-attr]
        raise AdminError(408, "RequestTimeout", f"the body did not arrive within {within_s:g} "
                         "s") from None


async def _read_whole(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise AdminError(413, "EntityTooLarge", f"admin bodies are at most {MAX_BODY_BYTES} bytes")
    out = bytearray()
    while True:
        try:
            chunk = await request.content.read(16 * 1024)
        except RequestPayloadError as exc:  # its chunked framing broke (storage.headguard)
            request.content.feed_eof()  # read no more (aiohttp's linger would raise it again)
            request.protocol.close()  # type: ignore[union-attr]
            log.warning("refused an admin request body with broken framing: %s",
                        payload_error_summary(exc))
            raise AdminError(400, "BadRequest", "An error occurred when parsing the HTTP "
                             "request.") from None
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > MAX_BODY_BYTES:
            raise AdminError(413, "EntityTooLarge",
                             f"admin bodies are at most {MAX_BODY_BYTES} bytes")
