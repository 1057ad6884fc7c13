"""Shard GETs from the first frame, served by the node's lean front (`nodes.leanput`).

The gateway reads a one-segment object's shards (262,200 bytes each for 1 MiB) with one
`GET /v1/shards/<id>?first=0&count=N` per shard. Through aiohttp each cost about as much
CPU in request plumbing (parser, request and response objects, router, middlewares,
header serialization) as in the read itself. Here the same work is done straight on the
lean front's connection: the signature and replay check (`Verifier.check_async`, the
`authenticate` middleware's), the shard id, then `nodes.shardget`'s open, first-window
check and sendfile of verified frames, with the aiohttp handler's refusals, quarantines,
metrics and log line (`"front": "lean"`), and a response head built in one string.

Reads from a later frame, other queries, a GET with a body and everything else are
aiohttp's (`nodes.leanput.parse_lean_head` decides before anything is checked).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nodes.handlers import (
    REQUEST_ID_HEADER,
    SEGMENTS_HEADER,
    ApiError,
    NodeState,
    RequestStats,
)
from nodes.shardfile import check_shard_id
from nodes.shardget import open_get, reader_checks, send_body
from storage.errors import InvalidInput

_HEAD_200 = f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{SEGMENTS_HEADER}: "


async def lean_get(st: NodeState, stats: RequestStats, path: str, target: str, headers: object,
                   count: int | None, date: str, close: bool,
                   transport: Callable[[], asyncio.WriteTransport | None]) -> bool:
    """Check and serve `GET target` (frames from 0, `count` of them or all) on the
    connection `transport()` gives (None once it is lost). ApiError before the response
    head is written; after it, whether the body went out whole (if not, the caller drops
    the connection: the peer sees fewer bytes than Content-Length)."""
    reason = await st.verifier.check_async("GET", target, headers)
    if reason is not None:
        raise ApiError(401, "unauthorized", reason)
    sid = path[path.rindex("/") + 1:]
    try:
        check_shard_id(sid)
    except InvalidInput:
        raise ApiError(400, "invalid_shard_id", "malformed shard id") from None
    stream, head, window = await open_get(st, stats, sid, 0, count, reader_checks(headers))
    async with stream:
        t = transport()
        if t is None:
            stats.extra["truncated"] = True
            stats.extra["aborted"] = "ConnectionResetError"
            return False
        t.write((f"{_HEAD_200}{stream.segments}\r\nContent-Length: {stream.body_bytes}\r\n"
                 f"{REQUEST_ID_HEADER}: {stats.request_id}\r\nDate: {date}\r\n"
                 + ("Connection: close\r\n\r\n" if close else "\r\n")).encode("latin-1"))

        async def write(data: bytes) -> None:
            live = transport()
            if live is None:
                raise ConnectionResetError("client went away")
            live.write(data)

        return await send_body(st, stats, stream, head, window, write, transport)
