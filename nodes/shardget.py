"""Shard GETs: open a shard, check its header and first window, then send the verified
frames with sendfile. Shared by aiohttp's handler (`get_shard`) and the lean front
(`nodes.leanget`), so both check, refuse, quarantine and cut short alike.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import BinaryIO, NoReturn, cast

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
                   count: int | None, checked_by_reader: bool = False, again: bool = True,
                   ) -> tuple[ShardReadStream, bytes, Window]:
    """The open stream of frames [first, first+count) of `sid`, its header bytes and its
    first verified window; ApiError 404, 416 or 409 (the shard quarantined) otherwise.
    `checked_by_reader`: frames go out unchecked here (`ShardReadStream.reader_checks`).
    A packed record that died while being opened (replaced or deleted, then punched: its
    bytes zeros) is not a corrupt shard: the shard is opened again where it is now (`again`,
    once), or 404. The caller closes the stream."""
    try:
        return await _open_get(st, stats, sid, first, count, checked_by_reader)
    except _RecordDied:
        if again:
            return await open_get(st, stats, sid, first, count, checked_by_reader, False)
        raise ApiError(404, "not_found", f"shard {sid} not found") from None


class _RecordDied(Exception):
    """The packed record read died since it was located (`DiskShardStore.record_died`)."""


async def _refuse(st: NodeState, stats: RequestStats, sid: str, exc: ShardCorrupt) -> NoReturn:
    """Bad bytes at open: _RecordDied when their record died since (decided before any
    quarantine, which removes the shard), else quarantined and a 409."""
    if st.store.record_died(sid, exc.file):
        raise _RecordDied
    await quarantine(st, stats.request_id, sid, exc, "read")
    raise ApiError(409, "corrupt", str(exc))


async def _open_get(st: NodeState, stats: RequestStats, sid: str, first: int,
                    count: int | None, checked_by_reader: bool,
                    ) -> tuple[ShardReadStream, bytes, Window]:
    """`open_get` once (`_refuse` on bad bytes)."""
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
        await _refuse(st, stats, sid, exc)
    st.metrics.shard_reads.inc()
    st.store.recent.touch(sid)
    _, good, err = window
    if err is not None and good == 0:  # a corrupt first window is still a clean 409
        await stream.aclose()
        await _refuse(st, stats, sid, err)
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
    if offset == stream.base + HEADER_BYTES and good:  # from frame 0: the shard's own
        offset, good, head = stream.base, good + HEADER_BYTES, b""  # (checked) header
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


WAIT_SLICE_S = 1.0  # a wait for the socket to drain looks at the transport this often


async def send_file(loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport,
                    file: BinaryIO, offset: int, count: int) -> int:
    """`count` bytes of `file` from `offset` by `os.sendfile` (page cache to socket, no copy
    in this process), after whatever the transport still holds. A shard window usually fits
    the socket buffer whole: the calls go straight from the loop. When the socket is full
    (or the transport still holds bytes queued before ours) the loop waits until it is
    writable (`_writable`) and goes on. One way on every event loop: uvloop, which the
    node runs on, has no `loop.sendfile` (NotImplementedError), and asyncio's costs more
    per request than the calls (reading paused and resumed, a writer, futures, a seek).
    A file shorter than asked ends the sending early: the bytes sent are returned.
    ConnectionResetError when the transport closes first."""
    sock = transport.get_extra_info("socket")
    if sock is None:  # (uvloop's transports are no asyncio.WriteTransport instances)
        raise ConnectionResetError("no socket under the transport")
    writing = cast(asyncio.WriteTransport, transport)
    fd, out = file.fileno(), sock.fileno()
    sent = 0
    while count:
        if transport.is_closing():
            raise ConnectionResetError("client went away")
        if writing.get_write_buffer_size():  # bytes queued before ours go out first
            await _writable(loop, out)
            continue
        try:
            n = os.sendfile(out, fd, offset, count)
        except (BlockingIOError, InterruptedError):
            await _writable(loop, out)
            continue
        if n == 0:
            return sent  # the file ended
        offset += n
        count -= n
        sent += n
    return sent


async def _writable(loop: asyncio.AbstractEventLoop, out: int) -> None:
    """Until the socket `out` is writable, or WAIT_SLICE_S passed (the caller looks at its
    transport again: one closed meanwhile ends the sending). Watched through a duplicate
    descriptor: a loop refuses a writer on a descriptor its transport owns."""
    dup = os.dup(out)
    woken: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    timer = loop.call_later(WAIT_SLICE_S, wake)
    loop.add_writer(dup, wake)
    try:
        await woken
    finally:
        timer.cancel()
        loop.remove_writer(dup)
        os.close(dup)
