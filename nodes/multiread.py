"""The node's side of POST /v1/stream (`storage.shards.multiread`): many whole shards in one
authenticated request, each checked in place and sent with sendfile after its record head.

Every shard named is opened and all its frames checked (through a mapping of the file:
page cache, no copy) in one worker-thread call for the whole request; a shard that fails
is answered by a record with its status and no bytes (a corrupt one is quarantined, as a
single GET would), so one bad shard never spoils the others. Only then do the bytes go out:
the record head, then the file with sendfile. A shard that changed on disk between its
check and its sending cannot be detected here; the client checks every frame again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os

import msgpack
from aiohttp import web

from nodes.disk import is_disk_full
from nodes.handlers import (
    NODE,
    REQUEST_ID_HEADER,
    STATS,
    ApiError,
    NodeState,
    _quarantine,
)
from nodes.shardfile import check_shard_id, in_thread
from nodes.shardget import send_file
from nodes.shardread import SEND_WINDOW_BYTES, ShardReadStream
from storage.errors import InvalidRange, NotFound, ShardCorrupt
from storage.shards.auth import BODY_HEADER, body_digest
from storage.shards.format import HEADER_BYTES
from storage.shards.multiread import (
    MAX_STREAM_BODY,
    MAX_STREAM_IDS,
    RECORD_BYTES,
    STREAM_PATH,
    pack_record,
)

# (status, stream or None, error): a stream whose every byte checked, or why not
Opened = tuple[int, ShardReadStream | None, Exception | None]


def _open_one(st: NodeState, sid: str) -> Opened:
    stream = st.store.open_read(sid, 0, None)
    try:
        stream._open_sync()
        if stream.end == 0:
            return 200, stream, None  # a header and no frames
        offset, good, err = stream._verify_window_sync(SEND_WINDOW_BYTES)
        if err is not None:
            raise err
        if offset != HEADER_BYTES or HEADER_BYTES + good != stream.body_bytes:
            _close(stream)
            return 413, None, None  # larger than one checked window: GET it instead
        return 200, stream, None
    except (NotFound, InvalidRange):
        _close(stream)
        return 404, None, None
    except (ShardCorrupt, OSError) as exc:
        _close(stream)
        return (409 if isinstance(exc, ShardCorrupt) else
                507 if is_disk_full(exc) else 500), None, exc


def _open_all(st: NodeState, sids: list[str]) -> list[Opened]:
    return [_open_one(st, sid) for sid in sids]


def _close(stream: ShardReadStream | None) -> None:
    if stream is not None and stream._fd is not None:
        with contextlib.suppress(OSError):
            os.close(stream._fd)
        stream._fd = None


async def _ids(request: web.Request) -> list[str]:
    """The shard ids the signed body names (its digest checked against the signed one)."""
    if request.content_length is None or request.content_length > MAX_STREAM_BODY:
        raise ApiError(413, "too_large", f"a stream request needs a body <= {MAX_STREAM_BODY}")
    body = await request.content.readexactly(request.content_length)
    claimed = request.headers.get(BODY_HEADER, "")
    if not claimed or not hmac.compare_digest(body_digest(body), claimed):
        raise ApiError(401, "unauthorized", "stream body does not match its signed digest")
    try:
        ids = msgpack.unpackb(body, raw=False)["ids"]
        if not isinstance(ids, list) or not 0 < len(ids) <= MAX_STREAM_IDS:
            raise ValueError("ids")
        for sid in ids:
            check_shard_id(sid if isinstance(sid, str) else "")
    except Exception:  # noqa: BLE001 - any undecodable body is a client error
        raise ApiError(400, "bad_request",
                       f"body is not {{ids: [1..{MAX_STREAM_IDS} shard ids]}}") from None
    return ids


async def stream_shards(request: web.Request) -> web.StreamResponse:
    st: NodeState = request.app[NODE]
    stats = request[STATS]
    sids = await _ids(request)
    opened = await in_thread(lambda: _open_all(st, sids))
    try:
        for sid, (status, _, exc) in zip(sids, opened, strict=True):
            if status == 409 and exc is not None:
                await _quarantine(request, sid, exc, "read")
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": "application/octet-stream", REQUEST_ID_HEADER: stats.request_id})
        resp.content_length = sum(
            RECORD_BYTES + (s.body_bytes if s is not None else 0)
            for _, s, _ in opened)
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        sent = 0
        try:
            for status, stream, _ in opened:
                if stream is None:
                    await resp.write(pack_record(status, 0, 0))
                    continue
                await resp.write(pack_record(200, stream.segments, stream.body_bytes))
                transport = request.transport
                if transport is None:
                    raise ConnectionResetError("client went away")
                with open(stream.fileno(), "rb", buffering=0, closefd=False) as file:
                    await send_file(loop, transport, file, 0, stream.body_bytes)
                sent += stream.body_bytes
                st.metrics.shard_reads.inc()
        except (ConnectionError, OSError) as exc:
            stats.extra["aborted"] = type(exc).__name__
            with contextlib.suppress(Exception):
                request.protocol.force_close()
            return resp
        finally:
            stats.bytes_out += sent
            st.metrics.bytes_out.inc(sent)
            stats.extra.update(shards=len(sids))
    finally:
        for _, stream, _ in opened:
            _close(stream)
    await resp.write_eof()
    return resp


def add_stream_route(app: web.Application) -> None:
    app.router.add_post(STREAM_PATH, stream_shards, name="stream")
