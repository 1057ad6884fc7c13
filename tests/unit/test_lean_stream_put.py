"""A shard PUT larger than the lean front takes whole is streamed by it (`nodes.leanstream`):
received into page-aligned buffers, written from them in batches, committed only when the
body MAC matches; a body refused, tampered with or cut short commits nothing and leaves
no file; a replay is refused; past the shard cap aiohttp answers 413."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import nodes.leanput as leanput
from nodes.app import create_app
from nodes.directio import BUFFER_BYTES
from nodes.handlers import NODE, ApiError
from nodes.leanput import LeanListener
from nodes.leanstream import BATCH_BUFS, MAX_BUFS, BodyStream
from nodes.packdrops import DROPS_NAME, HIGHEST_NAME
from nodes.packreserve import RESERVE_NAME
from nodes.shardwrite import ShardWriter
from storage.shards.auth import TRAILER_BYTES, seal, sign
from tests.contract.node_harness import make_shard

SECRET = b"s" * 32
FRAMES, BLOCK = 40, 262144  # ~10 MiB: two full batches and a partial one


class Served:
    def __init__(self, host: str, port: int, data: Path) -> None:
        self.host, self.port, self.data = host, port, data
        self.done: asyncio.Queue[int] = asyncio.Queue()  # each lean request's status


@pytest.fixture
async def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """An in-process node with its lean front, as served; `done` gets each lean request's
    status once it is finished (its upload committed or aborted)."""
    cap = getattr(request, "param", 8 * 1024**3)
    app = create_app("n1", "az1", tmp_path / "data", SECRET, 60, max_shard_bytes=cap)
    runner = web.AppRunner(app)
    await runner.setup()
    listener = LeanListener(app[NODE], runner)
    host, port = await listener.start("127.0.0.1", 0)
    node = Served(host, port, tmp_path / "data")
    real = leanput.record_request

    def record(st: Any, stats: Any, method: str, path: str, query: str, op: str,
               status: int, elapsed: float) -> None:
        real(st, stats, method, path, query, op, status, elapsed)
        node.done.put_nowait(status)

    monkeypatch.setattr(leanput, "record_request", record)
    try:
        yield node
    finally:
        await listener.stop(5)
        await runner.cleanup()


def put_bytes(node: Served, sid: str, body: bytes, *, tamper: bool = False,
              close: bool = True) -> bytes:
    path = f"/v1/shards/{sid}"
    headers = sign(SECRET, "PUT", path, "n1", trailer=True)
    sealed = seal(SECRET, headers, body)
    if tamper:
        sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
    head = (f"PUT {path} HTTP/1.1\r\nHost: {node.host}:{node.port}\r\n"
            + ("Connection: close\r\n" if close else "")
            + f"Content-Length: {len(sealed)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
    return head.encode() + sealed


async def send(node: Served, data: bytes, *, cut: bool = False) -> bytes:
    """Send `data` and read until the node hangs up; with `cut`, hang up after sending."""
    reader, writer = await asyncio.open_connection(node.host, node.port)
    try:
        writer.write(data)
        await writer.drain()
        if cut:
            return b""
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


async def get(node: Served, sid: str) -> bytes:
    path = f"/v1/shards/{sid}"
    headers = sign(SECRET, "GET", path, "n1")
    head = (f"GET {path} HTTP/1.1\r\nHost: {node.host}:{node.port}\r\nConnection: close\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
    return await send(node, head.encode())


def files(root: Path) -> list[str]:
    """Every regular file below `root` but the replay watermark, an empty pack (a packing
    node opens one at start; a record committed to it would show), the packs' reserve
    (`nodes.packreserve`, made at start) and the records of dropped packs and of the highest
    pack number (`nodes.packdrops`, made at start): what PUTs left behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not p.name.startswith("replay-watermark")
                  and not (p.parent.name == "packs" and (p.stat().st_size == 0
                                                         or p.name in (RESERVE_NAME, DROPS_NAME,
                                                                      HIGHEST_NAME))))


async def test_a_large_put_is_streamed_from_aligned_buffers_in_batches(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    real = ShardWriter.write_aligned_sync

    def counted(self: ShardWriter, parts: list[memoryview]) -> None:
        batches.append(sum(map(len, parts)))
        real(self, parts)

    async def no_aiohttp(*args: object) -> None:
        raise AssertionError("the streamed handler ran")

    monkeypatch.setattr(ShardWriter, "write_aligned_sync", counted)
    monkeypatch.setattr(ShardWriter, "write_many", no_aiohttp)
    sid, _, _, body = make_shard(index=0, frames=FRAMES, block_size=BLOCK, last=None)
    answer = await send(served, put_bytes(served, sid, body))
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]
    assert await served.done.get() == 201
    batch = BATCH_BUFS * BUFFER_BYTES
    n = len(body)
    assert batches == [batch] * (n // batch) + ([n % batch] if n % batch else [])
    got = await get(served, sid)
    assert got.startswith(b"HTTP/1.1 200 ") and got.partition(b"\r\n\r\n")[2] == body


async def test_a_tampered_trailer_commits_nothing(served: Served) -> None:
    sid, _, _, body = make_shard(index=0, frames=FRAMES, block_size=BLOCK, last=None)
    answer = await send(served, put_bytes(served, sid, body, tamper=True))
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert await served.done.get() == 401
    assert (await get(served, sid)).startswith(b"HTTP/1.1 404 ")
    assert files(served.data) == []


async def test_a_body_cut_short_commits_nothing_and_a_retry_succeeds(served: Served) -> None:
    sid, _, _, body = make_shard(index=0, frames=FRAMES, block_size=BLOCK, last=None)
    whole = put_bytes(served, sid, body)
    await send(served, whole[:len(whole) - 3 * 1024 * 1024], cut=True)  # two batches in
    assert await served.done.get() == 400
    assert files(served.data) == []
    answer = await send(served, put_bytes(served, sid, body))
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]
    assert (await get(served, sid)).partition(b"\r\n\r\n")[2] == body


async def test_a_bad_frame_is_refused_after_the_body_is_read_away(served: Served) -> None:
    """The refusal comes once the rest of the body was read (and dropped): closing on
    unread bytes would reset the connection before the peer read the answer."""
    sid, h, _, body = make_shard(index=0, frames=FRAMES, block_size=BLOCK, last=None)
    at = h.frame_offset(30) + 100
    bad = body[:at] + bytes([body[at] ^ 1]) + body[at + 1:]
    answer = await send(served, put_bytes(served, sid, bad))
    assert answer.startswith(b"HTTP/1.1 409 ") and b"checksum mismatch" in answer
    assert await served.done.get() == 409
    assert files(served.data) == []


async def test_a_replayed_stream_put_is_refused(served: Served) -> None:
    sid, _, _, body = make_shard(index=0, frames=FRAMES, block_size=BLOCK, last=None)
    request = put_bytes(served, sid, body)
    assert (await send(served, request)).startswith(b"HTTP/1.1 201 ")
    again = await send(served, request)
    assert again.startswith(b"HTTP/1.1 401 ") and b"replay" in again, again[:300]


@pytest.mark.parametrize("served", [4 * 1024 * 1024], indirect=True)
async def test_past_the_shard_cap_aiohttp_answers_413(served: Served) -> None:
    sid, _, _, body = make_shard(index=0, frames=FRAMES, block_size=BLOCK, last=None)
    answer = await send(served, put_bytes(served, sid, body))
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert served.done.empty()  # not the lean front's
    assert files(served.data) == []


async def test_reading_pauses_while_a_stream_holds_all_its_buffers() -> None:
    calls: list[bool] = []
    length = (MAX_BUFS + 2) * BUFFER_BYTES + TRAILER_BYTES
    body = BodyStream(length, calls.append, 30.0)
    chunk = os.urandom(BUFFER_BYTES)
    for _ in range(MAX_BUFS):
        body.feed(chunk)
    assert calls == [True]  # every buffer filled, none written yet
    first = await body.next_batch()
    assert first is not None and len(first) == BATCH_BUFS
    body.recycle(first)
    assert calls == [True, False]
    body.close()


async def test_a_stalled_body_is_given_up() -> None:
    body = BodyStream(8 * BUFFER_BYTES, lambda pause: None, 0.05)
    body.feed(b"x" * 1000)
    with pytest.raises(ApiError, match="stalled"):
        await body.next_batch()
    body.close()
