"""Shard GETs: open a shard, check its header and first window, then send the verified
frames with sendfile. Shared by aiohttp's handler (`get_shard`) and the lean front
(`nodes.leanget`), so both check, refuse, quarantine and cut short alike.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import BinaryIO

from aiohttp import web

from nodes.handlers import (
    NODE,
    REQUEST_ID_HEADER,
    SEGMENTS_HEADER,
    STATS,
    ApiError,
    NodeState,
    RequestStats,
    _disk,
    _opt_int,
    _shard_id,
    drop_connection,
    quarantine,
)
from nodes.shardread import ShardReadStream
from storage.errors import InvalidRange, NotFound, ShardCorrupt
from storage.shards.format import HEADER_BYTES, READER_CHECKS, READER_CHECKS_HEADER

Window = tuple[int, int, ShardCorrupt | None]  # file offset, bytes verified, what stopped it


def reader_checks(headers: object) -> bool:
    """Whether the (signed) request says its reader checks every frame itself."""
    return headers.get(READER_CHECKS_HEADER) == READER_CHECKS  # type: ignore[attr-defined]


async def open_get(st: NodeState, stats: RequestStats, sid: str, first: int,
                   count: int | None, checked_by_reader: bool = False,
                   ) -> tuple[ShardReadStream, bytes, Window]:
    """The open stream of frames [first, first+count) of `sid`, its header bytes and its
    first verified window; ApiError 404, 416 or 409 (the shard quarantined) otherwise.
    `checked_by_reader`: frames go out unchecked here (`ShardReadStream.reader_checks`).
    The caller closes the stream."""
    stream = st.store.open_read(sid, first, count)
    stream.reader_checks = checked_by_reader
    try:
        head, window = await _disk(stream.open_verified(hot=sid in st.store.recent))
    except NotFound:
        raise ApiError(404, "not_found", f"shard {sid} not found") from None
    except InvalidRange:
        raise ApiError(416, "invalid_range",
                       f"first={first} is past the last of {stream.segments} frames") from None
    except ShardCorrupt as exc:
        await quarantine(st, stats.request_id, sid, exc, "read")
        raise ApiError(409, "corrupt", str(exc)) from None
    st.metrics.shard_reads.inc()
    st.store.recent.touch(sid)
    _, good, err = window
    if err is not None and good == 0:  # a corrupt first window is still a clean 409
        await stream.aclose()
        await quarantine(st, stats.request_id, sid, err, "read")
        raise ApiError(409, "corrupt", str(err))
    return stream, head, window


async def send_body(st: NodeState, stats: RequestStats, stream: ShardReadStream, head: bytes,
                    window: Window, write: Callable[[bytes], Awaitable[None]],
                    transport: Callable[[], asyncio.BaseTransport | None]) -> bool:
    """Send the body whose response head is out: header bytes, then frames by sendfile
    (page cache to socket, no copy in this process), each window checked in place first.
    False when it was cut short (a frame failed its check: quarantined; the peer went
    away; a disk error or anything else): headers are sent, so the caller's only honest
    signal left is to drop the connection before Content-Length bytes."""
    loop = asyncio.get_running_loop()
    offset, good, err = window
    if offset == HEADER_BYTES and good:  # from frame 0: the file's own (checked) header
        offset, good, head = 0, good + HEADER_BYTES, b""
    try:
        if head:
            await write(head)
            stats.bytes_out += len(head)
            st.metrics.bytes_out.inc(len(head))
        with open(stream.fileno(), "rb", buffering=0, closefd=False) as file:
            while good:
                t = transport()
                if t is None:
                    raise ConnectionResetError("client went away")
                if await send_file(loop, t, file, offset, good) != good:
                    raise ConnectionResetError("the shard file ended early")
                stats.bytes_out += good
                st.metrics.bytes_out.inc(good)
                if err is not None:
                    raise err
                offset, good, err = await _disk(stream.verified_window())
                if err is not None and good == 0:
                    raise err
    except ShardCorrupt as exc:
        stats.extra["truncated"] = True
        try:  # a disk that refuses the move (EROFS, EIO) must not reach the caller: past
            await quarantine(st, stats.request_id, stream.shard_id, exc, "read")
        except Exception as qexc:  # noqa: BLE001 - the head, only a short body is honest
            stats.extra["aborted"] = type(qexc).__name__
            st.log.error("quarantine failed", request_id=stats.request_id,
                         shard_id=stream.shard_id, error=type(qexc).__name__)
        return False
    except Exception as exc:  # noqa: BLE001 - past the head only a short body can say it
        stats.extra["truncated"] = True
        stats.extra["aborted"] = type(exc).__name__
        if not isinstance(exc, (ConnectionError, OSError, ApiError)):
            st.log.error("unhandled error", request_id=stats.request_id,
                         error=type(exc).__name__)
        return False
    return True


async def get_shard(request: web.Request) -> web.StreamResponse:
    """`GET /v1/shards/{id}?first=&count=` through aiohttp."""
    st = request.app[NODE]
    stats: RequestStats = request[STATS]
    sid = _shard_id(request)
    first = _opt_int(request.query.get("first"), "first") or 0
    count = _opt_int(request.query.get("count"), "count")
    stream, head, window = await open_get(st, stats, sid, first, count,
                                          reader_checks(request.headers))
    async with stream:
        resp = web.StreamResponse(status=200, headers={
            SEGMENTS_HEADER: str(stream.segments),
            "Content-Type": "application/octet-stream",
            REQUEST_ID_HEADER: stats.request_id,
        })
        resp.content_length = stream.body_bytes
        await resp.prepare(request)
        if not await send_body(st, stats, stream, head, window, resp.write,
                               lambda: request.transport):
            drop_connection(request)
            return resp
    await resp.write_eof()
    return resp


async def send_file(loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport,
                    file: BinaryIO, offset: int, count: int) -> int:
    """`loop.sendfile` of `count` bytes of `file` from `offset`, but first straight
    `os.sendfile` calls while the connection's socket takes the bytes and nothing is
    queued before them: a shard window usually fits the socket buffer whole, and asyncio's
    sendfile machinery (reading paused and resumed, a writer registered, futures, a seek)
    costs more per request than the call itself. What the socket does not take goes
    through `loop.sendfile`, which waits for it to drain. A file shorter than asked ends
    the sending early, as `loop.sendfile` does: the bytes sent are returned."""
    sock = transport.get_extra_info("socket")
    sent = 0
    if sock is not None and isinstance(transport, asyncio.WriteTransport) \
            and transport.get_write_buffer_size() == 0 and not transport.is_closing():
        fd, out = file.fileno(), sock.fileno()
        while count:
            try:
                n = os.sendfile(out, fd, offset, count)
            except (BlockingIOError, InterruptedError):
                break
            if n == 0:
                return sent  # the file ended
            offset += n
            count -= n
            sent += n
    if count:
        sent += await loop.sendfile(transport, file, offset, count)
    return sent
