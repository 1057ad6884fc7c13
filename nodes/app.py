"""The node's aiohttp application: routes, authentication, request logs and metrics."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from nodes.batch import add_batch_route
from nodes.disk import DiskShardStore
from nodes.handlers import (
    DEFAULT_MAX_SHARD_BYTES,
    NODE,
    REQUEST_ID_HEADER,
    STATS,
    ApiError,
    NodeState,
    RequestStats,
    add_routes,
    drop_connection,
    json_error,
)
from nodes.logs import JsonLog
from nodes.metrics import NodeMetrics
from storage.config import PackSettings, ScrubSettings, env_settings
from storage.shards.auth import Verifier, Watermark

UNAUTHENTICATED_PATHS = frozenset({"/metrics"})
QUIET_OPS = frozenset({"health", "metrics"})  # logged at debug level when they succeed
CLIENT_MAX_SIZE = 1024 * 1024  # no handler reads a body whole; PUT streams and has its own cap
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
                 405: "method_not_allowed", 413: "too_large"}


class RequestIds:
    """Ids for requests that bring none: a random prefix per process and a counter, unique
    across the node's lives and as cheap as an increment (uuid4 cost ~20 us a request).
    A forked process draws its own (`nodes.forker` forks every node from one import)."""

    def __init__(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        """A new prefix and the counter from 1: this process's ids are no one else's."""
        self._prefix = secrets.token_hex(8) + "-"
        self._next = itertools.count(1).__next__

    def __call__(self) -> str:
        return f"{self._prefix}{self._next():x}"


new_request_id = RequestIds()
os.register_at_fork(after_in_child=new_request_id.redraw)


def request_id_of(headers: Any) -> str:
    """The request's own id when it brings a well-formed one, else a new one."""
    rid = headers.get(REQUEST_ID_HEADER)
    return rid if rid and _REQUEST_ID_RE.match(rid) else new_request_id()


def record_request(st: NodeState, stats: RequestStats, method: str, path: str, query: str,
                   op: str, status: int, elapsed: float) -> None:
    """The metrics and the one log line of a finished request (both front ends)."""
    st.metrics.observe_request(op, status, elapsed)
    # Health probes and scrapes arrive every second from every gateway: debug, not info.
    level = logging.DEBUG if op in QUIET_OPS and status < 400 else logging.INFO
    st.log.event(level, "request", request_id=stats.request_id, method=method,
                 path=path, query=query, op=op, status=status,
                 duration_ms=round(elapsed * 1000, 3),
                 bytes=stats.bytes_in + stats.bytes_out, **stats.extra)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: request id, JSON errors, one log line and the metrics of every request."""
    st = request.app[NODE]
    stats = RequestStats(request_id=request_id_of(request.headers))
    request[STATS] = stats
    route = request.match_info.route
    op = route.name or "other"
    start = time.perf_counter()
    status = 500
    try:
        try:
            resp = await handler(request)
        except ApiError as exc:
            resp = json_error(exc.status, exc.code, exc.message)
        except web.HTTPException as exc:  # router 404/405, aiohttp's own limits
            if exc.status < 400:
                raise
            resp = json_error(exc.status, _STATUS_CODES.get(exc.status, "error"),
                              exc.reason or "error")
        except asyncio.CancelledError:
            status = 499
            raise
        except Exception as exc:
            st.log.error("unhandled error", request_id=stats.request_id,
                         error=type(exc).__name__)
            resp = json_error(500, "internal", "internal error")
        status = resp.status
        if not resp.prepared:
            if request.writer.output_size:  # failed past its own response head: cut it
                stats.extra["truncated"] = True
                drop_connection(request)
            resp.headers[REQUEST_ID_HEADER] = stats.request_id
        return resp
    finally:
        record_request(st, stats, request.method, request.path, request.query_string, op,
                       status, time.perf_counter() - start)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request but /metrics carries the cluster HMAC over method and raw path+query."""
    if request.path in UNAUTHENTICATED_PATHS:
        return await handler(request)
    reason = await request.app[NODE].verifier.check_async(request.method, request.path_qs,
                                                          request.headers)
    if reason is not None:
        raise ApiError(401, "unauthorized", reason)
    return await handler(request)


def create_app(node_id: str, zone: str, data_dir: Path, secret: bytes, window_s: int,
               *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
               scrub: ScrubSettings | None = None,
               packs: PackSettings | None = None) -> web.Application:
    """A node serving the shards below `data_dir` (created if needed); `scrub` and `packs`
    default to their sections' defaults with their environment overrides."""
    if len(secret) < 16:
        raise ValueError("the cluster secret must be at least 16 bytes")
    app = web.Application(middlewares=[observe, authenticate], client_max_size=CLIENT_MAX_SIZE)
    packs = packs or env_settings("packs")
    store = DiskShardStore(Path(data_dir), packs=packs)
    Path(data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    verifier = Verifier(secret, window_s, node_id,
                        watermark=Watermark(Path(data_dir) / "replay-watermark"))
    app[NODE] = NodeState(node_id=node_id, zone=zone, store=store,
                          verifier=verifier, metrics=NodeMetrics(node_id, zone),
                          log=JsonLog(node_id), max_shard_bytes=max_shard_bytes)

    async def on_startup(app: web.Application) -> None:
        await store.start()
        for harm in store.packs.damage if store.packs is not None else ():
            # Records lost inside a pack, or a whole pack gone, are missing shards to the
            # repair sweep; a torn tail was never acknowledged. Said once, here (bytes kept
            # aside); health and metrics count them (`pack_damage`, `packs_missing`).
            app[NODE].log.warning("pack damage", pack=harm.seq, missing=harm.missing,
                                  gaps=harm.gaps[:20],
                                  bad=[r.offset for r in harm.bad][:20],
                                  torn=list(harm.torn) if harm.torn else None)
        await asyncio.sleep(verifier.start_delay())  # past the last life's watermark

    async def on_cleanup(app: web.Application) -> None:
        await store.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    add_routes(app)
    add_batch_route(app)
    from nodes.scrubber import install as install_scrubber

    install_scrubber(app, store, scrub or env_settings("scrub"))
    from nodes.packcompact import install as install_compactor

    install_compactor(app, store, packs, app[NODE].log)
    return app
