"""POST /v1/batch: several small whole-shard PUTs and GETs in one authenticated request.

A small object's shards are a few KiB each; as separate requests, HTTP and thread-hop
overhead per shard costs far more than the bytes. The gateway therefore gathers the small
shard operations bound for one node into one request. The body is msgpack
`{"ops": [op, ...]}`, and the request signature covers its SHA-256 (`X-Tessera-Body-SHA256`),
since the body names the shards. Ops:

    {"op": "put", "id": shard id, "segments": n, "data": header + frames, "replace": bool}
    {"op": "get", "id": shard id, "first": i, "count": n}
    {"op": "stat", "id": shard id}

The answer is msgpack `{"results": [...]}`, one per op in order, each with the status a
single request would have had: put 201 `{"bytes", "segments"}`, get 200 `{"data",
"segments"}`, stat 200 `{"stat": what GET /v1/shards/<id>/stat answers}`, or `{"status",
"error", "message"}`. Stats are batched too because the repair sweep stats every shard of
every stripe: one request per shard cost more than moving the data being repaired. A put is checked like a streamed one
(header matches the id, every frame's checksum, frame layout, announced segment count) and is
reported written only once fsynced under its name. A put never replaces other bytes already
stored under its id (409 `shard_exists`; identical bytes are an idempotent 201) unless it says
`"replace": true`, which only repair and rebalancing send.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import msgpack
from aiohttp import web

from nodes.disk import is_disk_full
from nodes.handlers import NODE, STATS, ApiError, NodeState, _quarantine
from nodes.shardfile import UNCHANGED, ShardExists, check_shard_id
from nodes.smallio import put_many_sync, read_whole_sync
from storage.errors import (
    NODE_DISK_FULL,
    IntegrityError,
    InvalidInput,
    InvalidRange,
    NotFound,
    ShardCorrupt,
)
from storage.shards.auth import BODY_HEADER, body_digest
from storage.shards.format import FrameLayoutError, FrameScanner
from storage.testing import node_faults

MAX_BATCH_BYTES = 8 * 1024 * 1024  # whole request body
MAX_BATCH_OPS = 256
MAX_OP_BYTES = 1024 * 1024  # one shard put or read answer


def _err(status: int, code: str, message: str) -> dict[str, Any]:
    return {"status": status, "error": code, "message": message}


def check_put(sid: str, data: bytes, segments: Any) -> int | dict[str, Any]:
    """Validate one shard body as the streaming PUT does; its frame count or an error."""
    try:
        stripe, index = check_shard_id(sid)
    except InvalidInput:
        return _err(400, "invalid_shard_id", "malformed shard id")
    if not isinstance(data, bytes) or len(data) > MAX_OP_BYTES:
        return _err(413, "too_large", "shard too large for a batch")
    scanner = FrameScanner()  # checks the frames in place: no block is copied
    try:
        scanner.feed(data)
    except FrameLayoutError:
        return _err(400, "bad_frame_layout", "only the last frame may be shorter")
    except IntegrityError as exc:
        return _err(409, "corrupt", str(exc))
    h = scanner.header
    if h is None:
        return _err(400, "truncated", "body is shorter than a shard header")
    if h.stripe_id != stripe or h.index != index:
        return _err(400, "header_mismatch", "shard header names another stripe or index")
    if scanner.pending:
        return _err(400, "truncated", "body ends inside a frame")
    if not isinstance(segments, int) or segments != scanner.segments:
        return _err(400, "segment_count_mismatch",
                    f"{scanner.segments} frames received, {segments} announced")
    return scanner.segments


def _read_all(st: NodeState, ops: list[dict[str, Any]]) -> list[tuple[bytes, int] | Exception]:
    """Every get of a batch in one worker-thread call; per op its answer or its error."""
    out: list[tuple[bytes, int] | Exception] = []
    for op in ops:
        try:
            out.append(read_whole_sync(st.store, op["id"], op["first"], op["count"],
                                       MAX_OP_BYTES))
        except (OSError, InvalidInput, NotFound, InvalidRange, ShardCorrupt) as exc:
            out.append(exc)
    return out


def _stat_all(st: NodeState, sids: list[str]) -> list[dict[str, Any] | Exception]:
    """Every stat of a batch in one worker-thread call; per op its answer or its error."""
    out: list[dict[str, Any] | Exception] = []
    for sid in sids:
        try:
            out.append(st.store.stat_sync(sid))
        except (OSError, NotFound, ShardCorrupt) as exc:
            out.append(exc)
    return out


async def _stat_ops(st: NodeState, request: web.Request, stats: list[tuple[int, str]],
                    results: list[dict[str, Any] | None]) -> None:
    answers = await asyncio.to_thread(_stat_all, st, [sid for _, sid in stats])
    for (i, sid), ans in zip(stats, answers, strict=True):
        if isinstance(ans, dict):
            results[i] = {"status": 200, "stat": {"id": sid, **ans}}
        elif isinstance(ans, NotFound):
            results[i] = _err(404, "not_found", f"shard {sid} not found")
        elif isinstance(ans, ShardCorrupt):
            await _quarantine(request, sid, ans, "stat")
            results[i] = _err(409, "corrupt", str(ans))
        else:
            results[i] = (_err(507, "disk_full", NODE_DISK_FULL)
                          if is_disk_full(ans) else
                          _err(500, "io_error", f"storage I/O error ({ans.strerror})"))


def _get_args(op: dict[str, Any]) -> dict[str, Any] | None:
    sid, first, count = op.get("id"), op.get("first", 0), op.get("count")
    if not isinstance(sid, str) or not isinstance(first, int) or first < 0 or not (
            count is None or (isinstance(count, int) and count >= 0)):
        return None
    try:
        check_shard_id(sid)
    except InvalidInput:
        return None
    return {"id": sid, "first": first, "count": count}


async def _get_all(st: NodeState, request: web.Request, gets: list[tuple[int, dict[str, Any]]],
                   results: list[dict[str, Any] | None]) -> None:
    answers = await asyncio.to_thread(_read_all, st, [op for _, op in gets])
    for (i, op), ans in zip(gets, answers, strict=True):
        sid = op["id"]
        if isinstance(ans, tuple):
            st.metrics.shard_reads.inc()
            st.metrics.bytes_out.inc(len(ans[0]))
            results[i] = {"status": 200, "data": ans[0], "segments": ans[1]}
        elif isinstance(ans, NotFound):
            results[i] = _err(404, "not_found", f"shard {sid} not found")
        elif isinstance(ans, InvalidRange):
            results[i] = _err(416, "invalid_range", f"first={op['first']} is past the last frame")
        elif isinstance(ans, ShardCorrupt):
            await _quarantine(request, sid, ans, "read")
            results[i] = _err(409, "corrupt", str(ans))
        elif isinstance(ans, InvalidInput):
            results[i] = _err(413, "too_large", str(ans))
        else:
            assert isinstance(ans, OSError)
            results[i] = (_err(507, "disk_full", NODE_DISK_FULL)
                          if is_disk_full(ans) else
                          _err(500, "io_error", f"storage I/O error ({ans.strerror})"))


async def batch(request: web.Request) -> web.Response:
    st = request.app[NODE]
    stats = request[STATS]
    if request.content_length is None or request.content_length > MAX_BATCH_BYTES:
        raise ApiError(413, "too_large", f"a batch needs a Content-Length <= {MAX_BATCH_BYTES}")
    body = await request.content.readexactly(request.content_length)
    claimed = request.headers.get(BODY_HEADER, "")
    if not claimed or not hmac.compare_digest(body_digest(body), claimed):
        raise ApiError(401, "unauthorized", "batch body does not match its signed digest")
    try:
        ops = msgpack.unpackb(body, raw=False)["ops"]
        if not isinstance(ops, list) or len(ops) > MAX_BATCH_OPS:
            raise ValueError("ops")
    except Exception:  # noqa: BLE001 - any undecodable body is a client error
        raise ApiError(400, "bad_request", "batch body is not {ops: [...]}") from None
    stats.bytes_in += len(body)
    results: list[dict[str, Any] | None] = [None] * len(ops)
    puts: list[tuple[int, str, bytes, int, bool]] = []
    gets: list[tuple[int, dict[str, Any]]] = []
    stat_ids: list[tuple[int, str]] = []
    for i, op in enumerate(ops):
        kind = op.get("op") if isinstance(op, dict) else None
        if kind == "put":
            sid, data = op.get("id"), op.get("data")
            checked = check_put(sid, data, op.get("segments")) if isinstance(sid, str) \
                else _err(400, "bad_request", "put needs an id")
            if isinstance(checked, dict):
                if checked["status"] == 409:
                    st.metrics.checksum_failures.labels(where="put").inc()
                results[i] = checked
            elif not isinstance(op.get("replace", False), bool):
                results[i] = _err(400, "bad_request", "replace must be a boolean")
            elif (refused := node_faults.shard_put(st.node_id)) is not None:  # a test's only
                results[i] = _err(500, "injected_fault", refused)
            else:
                puts.append((i, sid, data, checked, op.get("replace", False)))
        elif kind == "get":
            args = _get_args(op)
            if args is None:
                results[i] = _err(400, "bad_request", "get needs an id, first >= 0, count >= 0")
            else:
                gets.append((i, args))
        elif kind == "stat":
            sid = op.get("id")
            try:
                check_shard_id(sid if isinstance(sid, str) else "")
                stat_ids.append((i, sid))
            except InvalidInput:
                results[i] = _err(400, "bad_request", "stat needs a shard id")
        else:
            results[i] = _err(400, "bad_request", "op must be put, get or stat")
    if puts:
        await _put_all(st, puts, results)
    if gets:
        await _get_all(st, request, gets, results)
    if stat_ids:
        await _stat_ops(st, request, stat_ids, results)
    stats.extra.update(puts=len(puts), gets=len(gets), stats=len(stat_ids))
    stats.bytes_out += sum(len(r.get("data", b"")) for r in results if r)
    return web.Response(body=msgpack.packb({"results": results}, use_bin_type=True),
                        content_type="application/msgpack")


async def _put_all(st: NodeState, puts: list[tuple[int, str, bytes, int, bool]],
                   results: list[dict[str, Any] | None]) -> None:
    # Shards packing takes are appended to the packs (one group commit for them all);
    # the rest, and any a shard file already decides, are written as files in one hop.
    outcomes: list[int | BaseException | None] = [None] * len(puts)
    takes = [n for n, put in enumerate(puts) if st.store.packs_for(len(put[2])) is not None]
    if takes:
        packed = await asyncio.gather(*(st.store.put_packed(puts[n][1], [puts[n][2]],
                                                            replace=puts[n][4])
                                        for n in takes), return_exceptions=True)
        for n, got in zip(takes, packed, strict=True):
            outcomes[n] = got
    files = [n for n, out in enumerate(outcomes) if out is None]
    if files:
        written = await asyncio.to_thread(put_many_sync, st.store,
                                          [puts[n][1:3] + (puts[n][4],) for n in files])
        for n, out in zip(files, written, strict=True):
            outcomes[n] = out
    for (i, sid, data, segments, _), out in zip(puts, outcomes, strict=True):
        if isinstance(out, BaseException) and not isinstance(out, (ShardExists, OSError)):
            raise out
        if isinstance(out, ShardExists):
            results[i] = _err(409, "shard_exists", str(out))
            continue
        if isinstance(out, OSError):
            results[i] = (_err(507, "disk_full", NODE_DISK_FULL)
                          if is_disk_full(out) else
                          _err(500, "io_error", f"storage I/O error ({out.strerror})"))
            continue
        if out != UNCHANGED:
            st.store._account(len(data) - out if out >= 0 else len(data), 0 if out >= 0 else 1)
        st.metrics.shard_writes.inc()
        st.metrics.bytes_in.inc(len(data))
        results[i] = {"status": 201, "id": sid, "bytes": len(data), "segments": segments}


def add_batch_route(app: web.Application) -> None:
    app.router.add_post("/v1/batch", batch, name="batch")
