"""The S3 endpoint: each request goes through one pipeline of small steps (`S3Server._run`):
route, resolve the bucket record (its one read), CORS, authenticate, authorize, dispatch to
the handler with a `RequestContext`; then error mapping and accounting (metrics, log)."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway import logs
from gateway.metrics import Metrics
from gateway.s3 import access_log, authz, cors, expect, post_upload, sigv2
from gateway.s3.bodyrecv import take_connection
from gateway.s3.context import RequestContext, resolve_bucket
from gateway.s3.errors import HOST_ID, S3Error, error_xml
from gateway.s3.errors_map import to_s3_error
from gateway.s3.handlers import Handler, load_all, object_lock
from gateway.s3.headlimit import head_bytes, too_large
from gateway.s3.replay import REPLAY_MAX_BYTES, BodyReplay
from gateway.s3.request_keys import (
    ABORTED_MID_BODY,
    BODY_REPLAY,
    BODY_TAKEN,
    BUCKET_RECORD,
    CORS_HEADERS,
    ENDPOINT,
    ERROR_CODE,
    REQUEST_ID,
    REQUESTER_ID,
)
from gateway.s3.router import (
    PREFLIGHT,
    VERSION_ID_OPS,
    Endpoint,
    check_version_id,
    parse_endpoint,
    unrouted_endpoint,
)
from gateway.s3.sigv4 import AuthResult, authenticate
from gateway.s3.sigv4_fields import SigV4Error
from storage import errors as se
from storage import kms
from storage.accesslog import AccessLogBuffer
from storage.activity import CLIENTS
from storage.cluster import Cluster
from storage.conditions import PreconditionFailed
from storage.config import GatewayConfig
from storage.records import Bucket
from storage.tenants import begin_request
from storage.uploadbudget import UPLOAD_WAIT_S
from storage.uploadbudget import WAIT_S as UPLOAD_REQUEST_WAIT_S

# Errors that a PutObject decided on a cached bucket record may owe to that record being
# stale, all raised before anything is committed (a commit on a stale record raises
# BucketChanged): only these are checked against a fresh read and run again.
REFUSALS: tuple[type[BaseException], ...] = (
    S3Error, SigV4Error, PreconditionFailed, se.NotFound, se.AccessDenied, se.InvalidInput,
    se.Conflict, se.KeyUnavailable, kms.KmsDisabled, kms.KmsInvalidState, kms.KmsAccessDenied)

log = logging.getLogger("tessera.access")
_CRED_RE = re.compile(r"Credential=([^/,\s]+)/")


def _access_key_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    m = _CRED_RE.search(auth)
    if m:
        return m.group(1)
    cred = request.query.get("X-Amz-Credential")
    return cred.split("/", 1)[0] if cred else None


def _signer(request: web.Request) -> str | None:
    """The access key a request names in its signature (V2 or V4; None: anonymous)."""
    if sigv2.is_sigv2(request.headers, request.query):
        return sigv2.access_key_of(request.headers, request.query)
    return _access_key_of(request)


@dataclass
class Flow:
    """What the pipeline knows of a request so far (for error mapping and accounting)."""

    request: web.Request
    rid: str = field(default_factory=lambda: secrets.token_hex(8).upper())
    started: float = field(default_factory=time.perf_counter)
    op: str = "Unknown"
    bucket: str | None = None
    key: str | None = None
    bucket_record: Bucket | None = None


def _body_received(request: web.BaseRequest) -> bool:
    """Whether the request's whole body came in (read or not), so an error answer can
    leave the connection to the next request: a body taken past aiohttp's parser must have
    been whole (`DirectBody.reusable`), any other must have reached its end in aiohttp."""
    direct = request.get(BODY_TAKEN)
    if direct is not None:
        return direct.reusable
    return request.content.is_eof()


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
        await expect.send_continue(request)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one request, recorded as client activity (background work gives way)."""
        CLIENTS.begin()
        resp: web.StreamResponse | None = None
        started_wall, started = time.time(), time.perf_counter()
        try:
            resp = await self._serve(request)
            return resp
        finally:
            received = request.content_length or 0
            out = (resp.content_length or 0) if resp is not None and request.method != "HEAD" \
                else 0
            CLIENTS.end(received + out)
            self.metrics.transferred(received, out)
            if self.access_logs is not None and resp is not None:  # the access-log step
                access_log.observe(self.access_logs, request, resp, started_wall, started,
                                   HOST_ID)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        """The pipeline: `_run`'s steps, then error mapping, then accounting."""
        flow = Flow(request)
        request[REQUEST_ID] = flow.rid
        UPLOAD_WAIT_S.set(UPLOAD_REQUEST_WAIT_S)  # a client waits for upload memory this long
        begin_request()  # one auth change stamp read serves every check of this request
        try:
            resp = await self._run(flow)
        except asyncio.CancelledError:
            self.metrics.request(flow.op, 499, time.perf_counter() - flow.started)
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes an S3 error
            if isinstance(exc, ConnectionError) and (
                    request.transport is None or request.transport.is_closing()):
                return self._client_gone(flow)
            resp = self._error_response(flow, exc)
            if isinstance(exc, RequestPayloadError) and not request.content.is_eof():
                # broken body framing: nothing more is read from this body (aiohttp's
                # lingering read would raise it again, as an ERROR traceback)
                take_connection(request)
                request.content.feed_eof()
        direct = request.get(BODY_TAKEN)  # received past aiohttp's parser (bodyrecv.py):
        if direct is not None and not direct.reusable:  # not whole, no request can follow
            take_connection(request)
            resp.force_close()
        self._account(flow, resp)
        return resp

    async def _run(self, flow: Flow) -> web.StreamResponse:
        """route -> resolve the bucket (one read, or the cached record) -> CORS ->
        authenticate -> authorize -> dispatch; each step is one method below."""
        ep = self._route(flow)
        cached = self._cached_bucket(flow.request, ep)
        if cached is None:
            # an anonymous GET's read-ahead takes no bodies: authorization reads the object
            # (a requester not the owner) and takes it, so its bodies would go unused
            bucket = await resolve_bucket(self.cluster, ep, ahead=True,
                                          bodies=_signer(flow.request) is not None)
            return await self._steps(flow, ep, bucket)
        replay = flow.request[BODY_REPLAY] = BodyReplay(flow.request.content)
        try:
            return await self._steps(flow, ep, cached)
        except REFUSALS:
            # Decided on the cached record: the answer stands only if that record is still
            # current (a commit compared it; a refusal is checked here with one read).
            # Anything else (a metadata store error above all: its commit may have been
            # applied) is answered as it is, never run twice.
            fresh = await resolve_bucket(self.cluster, ep)
            if fresh is not None and fresh.revision == cached.revision:
                raise
        replay.rewind()
        flow.request.pop(CORS_HEADERS, None)
        return await self._steps(flow, ep, fresh)

    def _cached_bucket(self, request: web.Request, ep: Endpoint) -> Bucket | None:
        """The cached record of the bucket a PutObject addresses, if the body is small
        enough to keep for a second run (gateway/s3/replay.py); None: read it."""
        if ep.op != "PutObject" or ep.bucket is None:
            return None
        length = request.content_length
        if length is None or length > REPLAY_MAX_BYTES:
            return None
        return self.cluster.buckets.cached(ep.bucket)

    async def _steps(self, flow: Flow, ep: Endpoint, bucket: Bucket | None
                     ) -> web.StreamResponse:
        """The pipeline after routing, on the bucket record `bucket` (None: no bucket)."""
        request = flow.request
        flow.bucket_record = bucket
        request[BUCKET_RECORD] = flow.bucket_record  # for the access log
        # A shredded tenant's bucket (its records wait for reclaim) answers nothing from
        # them, not even its CORS rules: a preflight finds no rule, no answer carries any.
        live = bucket is None or await self.cluster.tenants.active(bucket.tenant)
        if ep.op == PREFLIGHT:
            return cors.preflight(request, ep, flow.bucket_record, live)
        if "Origin" in request.headers and live:
            request[CORS_HEADERS] = cors.request_cors_headers(request, ep.bucket,
                                                                flow.bucket_record)
        if ep.op == "PostObject":  # browser upload: its signature is in the form
            await self._continue(request)
            return await post_upload.serve(self.cluster, self.cfg, request, ep, flow.rid,
                                           flow.bucket_record)
        auth, requester = await self._authenticate(request, ep)
        fields = None
        if object_lock.body_keyed(ep.op, flow.bucket_record):
            # its condition keys are in its body: read (small, within a deadline) before it
            # is authorized; a length over the cap is refused without asking for the body
            object_lock.check_lock_length(request)
            await self._continue(request)
            fields = await object_lock.condition_fields(RequestContext(
                request, ep, auth, flow.bucket_record.tenant, self.cluster, self.cfg,
                flow.rid, requester.tenant if requester else None, flow.bucket_record))
        tenant = await authz.authorize(self.cluster, request, ep, requester, flow.bucket_record,
                                       fields=fields)
        self.metrics.tenant_request(tenant)
        if ep.op in VERSION_ID_OPS and "versionId" in ep.params:
            if flow.bucket_record is None:  # NoSuchBucket comes before the id's form
                raise se.BucketNotFound(ep.bucket or "")
            check_version_id(ep.params["versionId"])
        handler = self._handler(ep.op)
        rq = RequestContext(request, ep, auth, tenant, self.cluster, self.cfg, flow.rid,
                            requester.tenant if requester else None, flow.bucket_record)
        if ep.op not in expect.AT_BODY_READ_OPS:  # those ask for it after their own checks
            await self._continue(request)
        return await handler(rq)

    def _route(self, flow: Flow) -> Endpoint:
        request = flow.request
        try:
            if head_bytes(request) > self.cfg.max_header_bytes:
                raise too_large(self.cfg.max_header_bytes)
            ep = parse_endpoint(request.method, request.raw_path, request.query, request.host,
                                self.cfg.virtual_host_domain,
                                has_copy_source="x-amz-copy-source" in request.headers)
        except S3Error:  # refused before routing: still logged if it names a logged bucket
            request[ENDPOINT] = unrouted_endpoint(request.method, request.raw_path,
                                                       request.host,
                                                       self.cfg.virtual_host_domain)
            raise
        flow.op, flow.bucket, flow.key = ep.op, ep.bucket, ep.key
        request[ENDPOINT] = ep  # for the access log
        return ep

    async def _authenticate(self, request: web.Request, ep: Endpoint,
                            ) -> tuple[AuthResult, authz.Requester | None]:
        """Check the signature (SigV4 or V2, headers or query): who signed, if anyone."""
        v2 = sigv2.is_sigv2(request.headers, request.query)
        ak = _signer(request)
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
                                self.cfg.max_skew_s, self.cfg.region)
        if auth.anonymous:
            return auth, None
        if cred is None or cred.role != "tenant":
            raise S3Error("AccessDenied")
        cid, _ = await self.cluster.tenants.identity(cred.tenant)
        request[REQUESTER_ID] = cid  # for the access log
        return auth, authz.Requester(cred.tenant, cid, cred.access_key)

    def _handler(self, op: str) -> Handler:
        handler = self.handlers.get(op)
        if handler is None:
            raise S3Error("NotImplemented", "A header or query you provided requested a "
                          "function that is not implemented.")
        return handler

    def _error_response(self, flow: Flow, exc: Exception) -> web.Response:
        """Any exception as the S3 error response AWS would send."""
        request = flow.request
        err = to_s3_error(exc, flow.bucket, flow.key)
        request[ERROR_CODE] = err.code  # for the access log
        if err.resource is None and flow.op != PREFLIGHT:
            err.resource = request.path
        headers = dict(err.headers)
        if err.has_body and request.method != "HEAD":
            resp = web.Response(status=err.status, body=error_xml(err, flow.rid, HOST_ID),
                                content_type="application/xml", headers=headers)
        else:
            resp = web.Response(status=err.status, headers=headers)
        if not _body_received(request):
            # Do not read a large unread body just to keep the connection: close it.
            resp.force_close()
        return resp

    def _account(self, flow: Flow, resp: web.StreamResponse) -> None:
        """The last step of every request: its metrics and its log line."""
        request = flow.request
        elapsed = time.perf_counter() - flow.started
        status = 500 if request.get(ABORTED_MID_BODY) else resp.status
        self.metrics.request(flow.op, status, elapsed)
        logs.info_line(log, "request", {"request_id": flow.rid, "op": flow.op,
                                        "method": request.method, "path": request.path,
                                        "status": status,
                                        "duration_ms": round(elapsed * 1000, 2)})

    def _client_gone(self, flow: Flow) -> web.StreamResponse:
        """The client hung up mid-request: logged as 499 at info level, not as an error."""
        request = flow.request
        elapsed = time.perf_counter() - flow.started
        self.metrics.request(flow.op, 499, elapsed)
        log.info("request", extra={"request_id": flow.rid, "op": flow.op,
                                   "method": request.method, "path": request.path,
                                   "status": 499, "client_closed": True,
                                   "duration_ms": round(elapsed * 1000, 2)})
        return web.Response(status=499, reason="Client Closed Request")
