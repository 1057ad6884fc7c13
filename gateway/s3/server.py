"""The S3 endpoint: route, authenticate, resolve the tenant, dispatch, answer errors as XML."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from datetime import UTC, datetime

from aiohttp import web

from gateway.metrics import Metrics
from gateway.s3 import access_log, authz, cors, post_upload, sigv2
from gateway.s3.errors import S3Error, error_xml
from gateway.s3.errors_map import to_s3_error
from gateway.s3.handlers import S3Request, load_all
from gateway.s3.router import PREFLIGHT, Endpoint, parse_endpoint
from gateway.s3.sigv4 import authenticate
from storage.accesslog import AccessLogBuffer
from storage.activity import CLIENTS
from storage.cluster import Cluster
from storage.config import GatewayConfig

log = logging.getLogger("tessera.access")
_CRED_RE = re.compile(r"Credential=([^/,\s]+)/")
HOST_ID = "tessera"


def _access_key_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    m = _CRED_RE.search(auth)
    if m:
        return m.group(1)
    cred = request.query.get("X-Amz-Credential")
    return cred.split("/", 1)[0] if cred else None


class S3Server:
    def __init__(self, cluster: Cluster, cfg: GatewayConfig, metrics: Metrics,
                 access_logs: AccessLogBuffer | None = None) -> None:
        self.cluster = cluster
        self.cfg = cfg
        self.metrics = metrics
        self.handlers = load_all()
        self.access_logs = access_logs  # server access logs (PutBucketLogging), if kept

    async def expect(self, request: web.Request) -> None:
        """`Expect:` is answered in `_continue`, once the request is authorized (aiohttp's
        default would send 100 Continue before that, and 417 to values S3 ignores)."""

    async def _continue(self, request: web.Request) -> None:
        if (request.headers.get("Expect", "").lower() == "100-continue"
                and request.version >= (1, 1) and request.writer is not None):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one request, recorded as client activity (background work gives way)."""
        CLIENTS.begin()
        resp: web.StreamResponse | None = None
        started_wall, started = time.time(), time.perf_counter()
        try:
            resp = await self._serve(request)
            return resp
        finally:
            out = resp.content_length if resp is not None else None
            CLIENTS.end((request.content_length or 0) + (out or 0))
            if self.access_logs is not None and resp is not None:
                access_log.observe(self.access_logs, request, resp, started_wall, started,
                                   HOST_ID)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        rid = secrets.token_hex(8).upper()
        request["request_id"] = rid
        started = time.perf_counter()
        op, bucket, key = "Unknown", None, None
        try:
            ep = parse_endpoint(request.method, request.raw_path, request.query, request.host,
                                self.cfg.virtual_host_domain,
                                has_copy_source="x-amz-copy-source" in request.headers)
            op, bucket, key = ep.op, ep.bucket, ep.key
            request["s3_endpoint"] = ep  # for the access log
            if ep.op == PREFLIGHT:
                return await self._preflight(request, ep, rid, started)
            if "Origin" in request.headers:
                request["cors_headers"] = await cors.request_cors_headers(
                    self.cluster, request, bucket)
            if ep.op == "PostObject":  # browser upload: its signature is in the form
                await self._continue(request)
                resp = await post_upload.serve(self.cluster, self.cfg, request, ep, rid)
            else:
                resp = await self._dispatch(request, ep, rid)
        except asyncio.CancelledError:
            self.metrics.request(op, 499, time.perf_counter() - started)
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes an S3 error
            if isinstance(exc, ConnectionResetError) and (
                    request.transport is None or request.transport.is_closing()):
                return self._client_gone(request, op, rid, started)
            err = to_s3_error(exc, bucket, key)
            request["s3_error_code"] = err.code
            resource = request.path
            if err.resource is None:
                err.resource = resource
            headers = dict(err.headers)
            if err.has_body and request.method != "HEAD":
                resp = web.Response(status=err.status, body=error_xml(err, rid, HOST_ID),
                                    content_type="application/xml", headers=headers)
            else:
                resp = web.Response(status=err.status, headers=headers)
            if request.method not in ("GET", "HEAD") and request.content_length:
                # Do not read a large unread body just to keep the connection: close it.
                resp.force_close()
        elapsed = time.perf_counter() - started
        status = 500 if request.get("aborted_mid_body") else resp.status
        self.metrics.request(op, status, elapsed)
        log.info("request", extra={"request_id": rid, "op": op, "method": request.method,
                                   "path": request.path, "status": status,
                                   "duration_ms": round(elapsed * 1000, 2)})
        return resp

    async def _dispatch(self, request: web.Request, ep: Endpoint, rid: str,
                        ) -> web.StreamResponse:
        """Authenticate (headers or query), authorize (`gateway.s3.authz`), run the handler."""
        v2 = sigv2.is_sigv2(request.headers, request.query)
        ak = sigv2.access_key_of(request.headers, request.query) if v2 else \
            _access_key_of(request)
        cred = await self.cluster.tenants.credential(ak) if ak else None

        def secret(a: str) -> str | None:
            return cred.secret_key if cred and a == cred.access_key else None

        if v2:
            auth = sigv2.authenticate(request.method, request.raw_path,
                                      list(request.query.items()), request.headers, secret,
                                      datetime.now(UTC), self.cfg.max_skew_s,
                                      ep.bucket if ep.virtual_host else None)
        else:
            auth = authenticate(request.method, request.raw_path, list(request.query.items()),
                                request.headers, secret, datetime.now(UTC),
                                self.cfg.max_skew_s)
        requester = None
        if not auth.anonymous:
            if cred is None or cred.role != "tenant":
                raise S3Error("AccessDenied")
            cid, _ = await self.cluster.tenants.identity(cred.tenant)
            requester = authz.Requester(cred.tenant, cid, cred.access_key)
            request["s3_requester_id"] = cid
        tenant = await authz.authorize(self.cluster, request, ep, requester)
        self.metrics.tenant_request(tenant)
        handler = self.handlers.get(ep.op)
        if handler is None:
            raise S3Error("NotImplemented", "A header or query you provided requested a "
                          "function that is not implemented.")
        rq = S3Request(request, ep, auth, tenant, self.cluster, self.cfg, rid,
                       requester.tenant if requester else None)
        await self._continue(request)
        return await handler(rq)

    def _client_gone(self, request: web.Request, op: str, rid: str,
                     started: float) -> web.StreamResponse:
        """The client hung up mid-request: logged as 499 at info level, not as an error."""
        elapsed = time.perf_counter() - started
        self.metrics.request(op, 499, elapsed)
        log.info("request", extra={"request_id": rid, "op": op, "method": request.method,
                                   "path": request.path, "status": 499,
                                   "client_closed": True,
                                   "duration_ms": round(elapsed * 1000, 2)})
        return web.Response(status=499, reason="Client Closed Request")

    async def _preflight(self, request: web.Request, ep: Endpoint, rid: str,
                         started: float) -> web.StreamResponse:
        """CORS preflight: unauthenticated, answered from the bucket's CORS rules."""
        try:
            resp = await cors.preflight(self.cluster, request, ep.bucket, ep.key)
        except Exception as exc:  # noqa: BLE001 - every error becomes an S3 error
            err = to_s3_error(exc, ep.bucket, ep.key)
            resp = web.Response(status=err.status, body=error_xml(err, rid, HOST_ID),
                                content_type="application/xml", headers=dict(err.headers))
        elapsed = time.perf_counter() - started
        self.metrics.request(PREFLIGHT, resp.status, elapsed)
        log.info("request", extra={"request_id": rid, "op": PREFLIGHT, "method": "OPTIONS",
                                   "path": request.path, "status": resp.status,
                                   "duration_ms": round(elapsed * 1000, 2)})
        return resp
