"""HTTP handlers of the node API (/v1): requests in, DiskShardStore calls, JSON or bytes out.

Errors are JSON `{"error": code, "message": text}`:
400 bad input, 401 unauthorized, 404 not_found, 409 corrupt or shard_exists, 413 too_large,
416 invalid_range, 500 io_error/internal, 507 disk_full.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from nodes.directio import writes_direct
from nodes.disk import DiskShardStore, is_disk_full
from nodes.logs import JsonLog
from nodes.metrics import NodeMetrics
from nodes.shardfile import CHUNK_BYTES, ShardExists, check_shard_id
from nodes.shardwrite import BodyMismatch, ShardWriter
from storage.errors import (
    NODE_DISK_FULL,
    IntegrityError,
    InvalidInput,
    NotFound,
    ShardCorrupt,
)
from storage.shards.auth import BODY_MODE_HEADER, BODY_TRAILER, TRAILER_BYTES, Verifier
from storage.shards.format import FrameLayoutError, FrameScanner
from storage.shards.packlist import PACKS_FORMAT, parse_packs
from storage.testing import node_faults
from storage.widereads import WIDE_BODY_BYTES, wide_reads

SEGMENTS_HEADER = "X-Tessera-Segments"
REPLACE_HEADER = "X-Tessera-Replace"
REQUEST_ID_HEADER = "X-Request-Id"
DEFAULT_MAX_SHARD_BYTES = 8 * 1024**3
MAX_LIST_LIMIT = 10_000
STREAM_BATCH_BYTES = 4 * CHUNK_BYTES  # a streamed PUT's received bytes per thread hop (write)
BIG_BATCH_STREAMS = 8  # streams batching that much at once; the rest batch CHUNK_BYTES, so
# the large batches add at most ~8 x 4 MiB to a node's received, unwritten bytes
_AFTER_RE = re.compile(r"^[0-9a-f.]{0,40}\Z")
_INT_RE = re.compile(r"^[0-9]{1,19}\Z")


@dataclass
class NodeState:
    """Everything the handlers of one node need; one per application."""

    node_id: str
    zone: str
    store: DiskShardStore
    verifier: Verifier
    metrics: NodeMetrics
    log: JsonLog
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    big_batch_streams: int = 0  # streamed PUTs now batching STREAM_BATCH_BYTES per write
    # this process's start, in /v1/health: a restart between two probes (a disk swapped
    # under a node restarted at once) still tells the repair sweep to look now
    started: float = field(default_factory=time.time)


@dataclass
class RequestStats:
    """Per-request facts the handlers report to the logging/metrics middleware."""

    request_id: str
    bytes_in: int = 0
    bytes_out: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


NODE: web.AppKey[NodeState] = web.AppKey("tessera_node", NodeState)
if hasattr(web, "RequestKey"):
    STATS: Any = web.RequestKey("tessera_stats", RequestStats)
else:  # aiohttp < 3.13
    STATS = "tessera_stats"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def drop_connection(request: web.Request) -> None:
    """Close the connection so the client sees fewer bytes than Content-Length: the only
    honest end of a response whose head (and perhaps part of its body) is out."""
    with contextlib.suppress(Exception):
        request.protocol.force_close()
    transport = request.transport
    if transport is not None:
        transport.close()


def _state(request: web.Request) -> NodeState:
    return request.app[NODE]


def _stats(request: web.Request) -> RequestStats:
    return request[STATS]


def _shard_id(request: web.Request) -> str:
    return _parsed_shard_id(request)[0]


def _parsed_shard_id(request: web.Request) -> tuple[str, bytes, int]:
    """The URL's shard id, checked, with its stripe id and index."""
    sid = request.match_info.get("id", "")
    try:
        stripe, index = check_shard_id(sid)
    except InvalidInput:
        raise ApiError(400, "invalid_shard_id", "malformed shard id") from None
    return sid, stripe, index


def _opt_int(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not _INT_RE.match(raw):
        raise ApiError(400, "bad_request", f"{name} must be a non-negative integer")
    return int(raw)


async def _quarantine(request: web.Request, sid: str, exc: Exception, where: str) -> None:
    await quarantine(_state(request), _stats(request).request_id, sid, exc, where)


async def quarantine(st: NodeState, request_id: str, sid: str, exc: Exception,
                     where: str) -> None:
    """Move a shard that failed a check at `where` aside, counted and logged. Bytes read
    from a packed record that died since it was located (a read racing a punch) are not
    rot: neither counted nor moved (`DiskShardStore.record_died`)."""
    if st.store.record_died(sid, getattr(exc, "file", None)):
        return
    st.metrics.checksum_failures.labels(where=where).inc()
    dest = await st.store.quarantine(sid, str(exc), getattr(exc, "file", None))
    if dest is not None:
        st.metrics.quarantined.inc()
        st.log.warning("shard quarantined", request_id=request_id, shard_id=sid,
                       reason=str(exc))


# -- PUT ---------------------------------------------------------------------------------------

class PutChecks:
    """What a shard PUT's body is checked for as it arrives (frame layout and checksums,
    the header against the URL's stripe and index, the frame count announced), shared by
    the streamed handler and the lean one (`nodes.leanput`) so both refuse alike."""

    def __init__(self, st: NodeState, stripe: bytes, index: int, expect: int | None) -> None:
        self._st = st
        self._stripe = stripe
        self._index = index
        self.expect = expect
        self.scanner = FrameScanner()
        self._header_checked = False

    def feed(self, body: bytes | memoryview) -> None:
        scanner = self.scanner
        try:
            scanner.feed(body)
        except FrameLayoutError as exc:
            raise ApiError(400, "bad_frame_layout", str(exc)) from None
        except IntegrityError as exc:
            self._st.metrics.checksum_failures.labels(where="put").inc()
            raise ApiError(409, "corrupt", str(exc)) from None
        if not self._header_checked and scanner.header is not None:
            h = scanner.header
            if h.stripe_id != self._stripe or h.index != self._index:
                raise ApiError(400, "header_mismatch",
                               "shard header names another stripe or index than the URL")
            if h.block_size == 0 or h.index >= h.k + h.m:
                raise ApiError(400, "bad_header", "shard header fields out of range")
            self._header_checked = True
        if self.expect is not None and scanner.segments > self.expect:
            raise ApiError(400, "segment_count_mismatch",
                           f"more than the {self.expect} frames announced")

    def finish(self, trailer_bytes: int) -> int:
        """The frame count once the body ended with `trailer_bytes` held back as its MAC."""
        scanner = self.scanner
        if trailer_bytes < TRAILER_BYTES:
            raise ApiError(400, "truncated", "body is shorter than its MAC trailer")
        if scanner.header is None:
            raise ApiError(400, "truncated", "body is shorter than a shard header")
        if scanner.pending:
            raise ApiError(400, "truncated", "body ends inside a frame")
        if self.expect is not None and scanner.segments != self.expect:
            raise ApiError(400, "segment_count_mismatch",
                           f"{scanner.segments} frames received, {self.expect} announced")
        return scanner.segments


@dataclass(frozen=True)
class PutTarget:
    """A shard PUT's URL and headers, checked before its body is taken."""

    sid: str
    stripe: bytes
    index: int
    expect: int | None
    replace: bool


def put_target(st: NodeState, raw_id: str, headers: Any, content_length: int | None,
               ) -> PutTarget:
    """Check a shard PUT's id, announced segments, replace flag, body mode and length."""
    try:
        stripe, index = check_shard_id(raw_id)
    except InvalidInput:
        raise ApiError(400, "invalid_shard_id", "malformed shard id") from None
    expect = _opt_int(headers.get(SEGMENTS_HEADER), SEGMENTS_HEADER)
    replace = _replace_flag(headers)
    if headers.get(BODY_MODE_HEADER) != BODY_TRAILER:
        raise ApiError(401, "unauthorized", "a shard PUT must end with a body MAC trailer "
                       f"({BODY_MODE_HEADER}: {BODY_TRAILER})")
    if content_length is not None and content_length > st.max_shard_bytes + TRAILER_BYTES:
        raise ApiError(413, "too_large", f"shard larger than {st.max_shard_bytes} bytes")
    if (refused := node_faults.shard_put(st.node_id)) is not None:  # a test's fault only
        raise ApiError(500, "injected_fault", refused)
    return PutTarget(raw_id, stripe, index, expect, replace)


async def commit_put(writer: ShardWriter, sid: str, tail: list[bytes | memoryview],
                     trailer: bytes, replace: bool) -> int:
    """Write the last of a PUT's body and commit it durably if `trailer` is its MAC."""
    try:
        return await _disk(writer.commit(tail, expect_digest=trailer, replace=replace))
    except BodyMismatch:
        raise ApiError(401, "unauthorized", "body does not match its signed MAC") from None
    except ShardExists:
        raise ApiError(409, "shard_exists",
                       f"shard {sid} exists with other content; only a repair replaces it")\
            from None


async def put_shard(request: web.Request) -> web.Response:
    """Stream a shard to disk, checking frames as they come and the body MAC at the end.

    The body is the shard file followed by a MAC trailer (`auth.BodySealer`): the last
    TRAILER_BYTES received are held back from parsing and writing, and the commit happens only
    when they equal the MAC of everything before them.
    """
    st = _state(request)
    stats = _stats(request)
    target = put_target(st, request.match_info.get("id", ""), request.headers,
                        request.content_length)
    sid = target.sid
    checks = PutChecks(st, target.stripe, target.index, target.expect)
    batch: list[bytes | memoryview] = []  # checked, not yet written: one hop per batch
    batched = 0
    held = b""  # the last TRAILER_BYTES received so far: the trailer once the body ends
    committed = False
    counted = 0  # of stats.bytes_in, the bytes already added to the bytes_in metric
    writer = await _disk(st.store.begin_put(sid))
    writer.digest = st.verifier.body_mac(request.headers)
    wide = contextlib.ExitStack()
    large = request.content_length is None or request.content_length >= WIDE_BODY_BYTES
    writer.direct = writes_direct(request.content_length)  # around the page cache
    big = st.big_batch_streams < BIG_BATCH_STREAMS
    batch_bytes = STREAM_BATCH_BYTES if big else CHUNK_BYTES
    st.big_batch_streams += big
    try:
        if large:
            wide.enter_context(wide_reads(request.transport, request.content))
        while True:
            try:
                chunk = await request.content.readany()  # as received: no join, no copy
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # client went away or sent a malformed body
                raise ApiError(400, "incomplete_body", f"body not received: {type(exc).__name__}")\
                    from None
            if not chunk:
                break
            stats.bytes_in += len(chunk)
            if stats.bytes_in > st.max_shard_bytes + TRAILER_BYTES:
                raise ApiError(413, "too_large", f"shard larger than {st.max_shard_bytes} bytes")
            if len(chunk) >= TRAILER_BYTES:  # views: no copy of the megabyte
                pieces: tuple[bytes | memoryview, ...] = (
                    held, memoryview(chunk)[:-TRAILER_BYTES])
                held = chunk[-TRAILER_BYTES:]
            else:
                joined = held + chunk
                pieces, held = (joined[:-TRAILER_BYTES],), joined[-TRAILER_BYTES:]
            for body in pieces:
                if not body:
                    continue
                checks.feed(body)
                batch.append(body)
                batched += len(body)
            if batched >= batch_bytes:
                st.metrics.bytes_in.inc(stats.bytes_in - counted)  # once a batch, not a chunk
                counted = stats.bytes_in
                await _disk(writer.write_many(batch))  # hashed in the same thread call
                batch, batched = [], 0
        segments = checks.finish(len(held))
        head = checks.scanner.header
        writer.warm = head is not None and head.index < head.k  # GETs read data shards
        size = await commit_put(writer, sid, batch, held, target.replace)
        committed = True
    finally:
        st.big_batch_streams -= big
        wide.close()
        st.metrics.bytes_in.inc(stats.bytes_in - counted)
        if not committed:
            await writer.abort()
    st.metrics.shard_writes.inc()
    return web.json_response({"id": sid, "bytes": size, "segments": segments}, status=201)


def _replace_flag(headers: Any) -> bool:
    """`X-Tessera-Replace: 1` (signed): an explicit repair or rewrite may replace a shard."""
    raw = headers.get(REPLACE_HEADER, "0")
    if raw not in ("0", "1"):
        raise ApiError(400, "bad_request", f"{REPLACE_HEADER} must be 0 or 1")
    return raw == "1"


async def _disk(aw: Any) -> Any:
    """Await a store call, mapping OS errors to API errors (ENOSPC -> 507)."""
    try:
        return await aw
    except OSError as exc:
        if is_disk_full(exc):
            raise ApiError(507, "disk_full", NODE_DISK_FULL) from None
        raise ApiError(500, "io_error", f"storage I/O error ({exc.strerror})") from None


# -- other shard operations ------------------------------------------------------------------

async def stat_shard(request: web.Request) -> web.Response:
    st = _state(request)
    sid = _shard_id(request)
    try:
        info = await _disk(st.store.stat(sid))
    except NotFound:
        raise ApiError(404, "not_found", f"shard {sid} not found") from None
    except ShardCorrupt as exc:
        await _quarantine(request, sid, exc, "stat")
        raise ApiError(409, "corrupt", str(exc)) from None
    return web.json_response({"id": sid, **info})


async def delete_shard(request: web.Request) -> web.Response:
    st = _state(request)
    sid = _shard_id(request)
    await _disk(st.store.delete(sid))
    return web.Response(status=204)


async def list_shards(request: web.Request) -> web.Response:
    st = _state(request)
    after = request.query.get("after", "")
    if not _AFTER_RE.match(after):
        raise ApiError(400, "bad_request", "after must be a shard id or a prefix of one")
    limit = _opt_int(request.query.get("limit"), "limit")
    limit = 1000 if limit is None else limit
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ApiError(400, "bad_request", f"limit must be between 1 and {MAX_LIST_LIMIT}")
    ids = await _disk(st.store.list(after, limit + 1))
    return web.json_response({"shards": ids[:limit], "truncated": len(ids) > limit})


async def verify_shard(request: web.Request) -> web.Response:
    st = _state(request)
    sid = _shard_id(request)
    try:
        bad, read = await _disk(st.store.verify(sid))
    except NotFound:
        raise ApiError(404, "not_found", f"shard {sid} not found") from None
    except ShardCorrupt as exc:
        await _quarantine(request, sid, exc, "verify")
        raise ApiError(409, "corrupt", str(exc)) from None
    if bad:
        await _quarantine(request, sid,
                          ShardCorrupt(sid, f"segments {bad} fail their checks", read), "verify")
    return web.json_response({"id": sid, "corrupt_segments": bad, "quarantined": bool(bad)})


_REASON_RE = re.compile(r"^[a-z0-9-]{1,64}\Z")
PACKS_LISTED = 1000  # lost pack numbers a health or ack answer lists at most


async def quarantine_shard(request: web.Request) -> web.Response:
    """Move a shard aside on the gateway's word: it holds valid checksums but wrong bytes
    (found by the GCM tag, which only the gateway can check). 404 when already gone."""
    st = _state(request)
    sid = _shard_id(request)
    reason = request.query.get("reason", "")
    if not _REASON_RE.match(reason):
        raise ApiError(400, "bad_request", "reason must be 1-64 of [a-z0-9-]")
    segment = _opt_int(request.query.get("segment"), "segment")
    text = f"gateway: {reason}" + ("" if segment is None else f" (segment {segment})")
    dest = await _disk(st.store.quarantine(sid, text))
    if dest is None:
        raise ApiError(404, "not_found", f"shard {sid} not found")
    st.metrics.quarantined.inc()
    st.log.warning("shard quarantined", request_id=_stats(request).request_id, shard_id=sid,
                   reason=text)
    return web.json_response({"id": sid, "quarantined": True})


async def ack_lost_packs(request: web.Request) -> web.Response:
    """Stop reporting lost packs (`?packs=3,4`): the repair sweep rebuilt their shards, or
    an operator says they are dealt with (`tessera node lost-packs --ack`)."""
    st = _state(request)
    seqs = parse_packs(request.query.get("packs", ""))
    if seqs is None:
        raise ApiError(400, "bad_request", PACKS_FORMAT)
    packs = st.store.packs
    done = [] if packs is None else await _disk(asyncio.to_thread(packs.acknowledge_lost, seqs))
    if done:
        st.log.warning("lost packs acknowledged", request_id=_stats(request).request_id,
                       packs=done)
    return web.json_response({"acknowledged": done, "packs_lost": [] if packs is None
                              else packs.missing[:PACKS_LISTED]})


async def list_quarantine(request: web.Request) -> web.Response:
    """Quarantined shards (sidecars), optionally only those moved after `since` (epoch s)."""
    st = _state(request)
    raw = request.query.get("since", "") or "0"
    try:
        since = float(raw)
    except ValueError:
        raise ApiError(400, "bad_request", "since must be a number of seconds") from None
    items = [e for e in await st.store.quarantined() if float(e.get("time", 0)) > since]
    return web.json_response({"quarantined": items[:MAX_LIST_LIMIT]})


async def health(request: web.Request) -> web.Response:
    st = _state(request)
    usage = await _disk(st.store.usage())
    return web.json_response({"node_id": st.node_id, "zone": st.zone, "status": "ok",
                              "used_bytes": usage["used_bytes"],
                              "disk_bytes": usage["disk_bytes"],
                              "free_bytes": usage["free_bytes"],
                              "total_bytes": usage["total_bytes"], "shards": usage["shards"],
                              # the packs' reserve (`nodes.packreserve`): held below size,
                              # packed PUTs are refused until it is whole again
                              "reserve_bytes": usage["reserve_bytes"],
                              "reserve_size": usage["reserve_size"],
                              # damage a restart found in the packs: a lost pack's shards
                              # are missing (repair rebuilds them); operators look here
                              "pack_damage": usage["pack_damage"],
                              "packs_missing": usage["packs_missing"],
                              "packs_lost": [] if st.store.packs is None
                              else st.store.packs.missing[:PACKS_LISTED],
                              "started": st.started,
                              "now": time.time()})  # gateways judge Object Lock by it


async def metrics(request: web.Request) -> web.Response:
    st = _state(request)
    usage = await st.store.usage()
    return web.Response(body=st.metrics.render(usage),
                        headers={"Content-Type": st.metrics.content_type})


def add_routes(app: web.Application) -> None:
    from nodes.shardget import get_shard  # it builds on this module

    app.router.add_put("/v1/shards/{id}", put_shard, name="put")
    app.router.add_get("/v1/shards/{id}", get_shard, name="get", allow_head=False)
    app.router.add_get("/v1/shards/{id}/stat", stat_shard, name="stat", allow_head=False)
    app.router.add_delete("/v1/shards/{id}", delete_shard, name="delete")
    app.router.add_post("/v1/shards/{id}/verify", verify_shard, name="verify")
    app.router.add_post("/v1/shards/{id}/quarantine", quarantine_shard, name="quarantine_shard")
    app.router.add_get("/v1/shards", list_shards, name="list", allow_head=False)
    app.router.add_get("/v1/quarantine", list_quarantine, name="quarantine", allow_head=False)
    app.router.add_get("/v1/health", health, name="health", allow_head=False)
    app.router.add_post("/v1/packs/lost/ack", ack_lost_packs, name="ack_lost_packs")
    app.router.add_get("/metrics", metrics, name="metrics", allow_head=False)
