"""A shard GET that fails after its response head went out ends the connection short of its
Content-Length: never an error document after part of the body (a client would read it as
shard bytes), on aiohttp's path (`nodes.shardget.get_shard`) and through the node's
outermost middleware for any handler that streams."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from nodes.app import create_app
from nodes.handlers import NODE
from nodes.leanput import LeanListener
from nodes.shardread import ShardReadStream
from storage.errors import ShardCorrupt
from storage.shards.auth import seal, sign
from storage.shards.format import HEADER_BYTES
from tests.contract.node_harness import make_shard

SECRET = b"s" * 32
FRAMES, BLOCK = 40, 262144  # ~10 MiB: several windows after the first


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """An in-process node with its lean front before aiohttp, as served: (host, port)."""
    app = create_app("n1", "az1", tmp_path / "data", SECRET, 60)
    runner = web.AppRunner(app)
    await runner.setup()
    listener = LeanListener(app[NODE], runner)
    host, port = await listener.start("127.0.0.1", 0)
    try:
        yield host, port
    finally:
        await listener.stop(5)
        await runner.cleanup()


async def _exchange(host: str, port: int, method: str, path_qs: str,
                    body: bytes = b"") -> bytes:
    """Send one request (Connection: close) and read everything until the node hangs up."""
    streamed = method == "PUT"
    headers = sign(SECRET, method, path_qs, "n1", trailer=streamed)
    if streamed:
        body = seal(SECRET, headers, body)
    # A GET goes without Content-Length, as the gateway sends it: the lean front hands any
    # request that has one to aiohttp.
    length = f"Content-Length: {len(body)}\r\n" if method != "GET" else ""
    head = (f"{method} {path_qs} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
            f"{length}"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head.encode() + body)
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


async def _stored(host: str, port: int, first: int = 1) -> tuple[str, bytes]:
    """A shard PUT: (its id, what a GET from frame `first` sends: the header, then frames
    from `first` on)."""
    sid, h, _, body = make_shard(index=0, frames=FRAMES, block_size=BLOCK, last=None)
    answer = await _exchange(host, port, "PUT", f"/v1/shards/{sid}", body)
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]
    return sid, body[:HEADER_BYTES] + body[h.frame_offset(first):]


def _split(answer: bytes) -> tuple[bytes, bytes]:
    head, _, rest = answer.partition(b"\r\n\r\n")
    return head, rest


def _count_lean(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each GET the lean front answers (its paths), so a test shows which front ran."""
    import nodes.leanput as leanput
    seen: list[str] = []
    real = leanput.lean_get

    async def counted(*args: object, **kwargs: object) -> bool:
        seen.append(str(args[2]))
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(leanput, "lean_get", counted)
    return seen


@pytest.mark.parametrize("first", [0, 1])  # from frame 0 the lean front's, else aiohttp's
async def test_an_io_error_after_the_head_cuts_the_body_short(
        node: tuple[str, int], monkeypatch: pytest.MonkeyPatch, first: int) -> None:
    host, port = node
    sid, body = await _stored(host, port, first)
    lean = _count_lean(monkeypatch)

    async def failing(self: ShardReadStream, max_bytes: int = 0) -> object:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(ShardReadStream, "verified_window", failing)
    answer = await _exchange(host, port, "GET",
                             f"/v1/shards/{sid}?first={first}&count={FRAMES}")
    head, got = _split(answer)
    assert head.startswith(b"HTTP/1.1 200 ") and f"Content-Length: {len(body)}\r\n".encode() in head
    assert 0 < len(got) < len(body)  # the first window, then the connection ends
    assert got == body[:len(got)]  # shard bytes only: no error document after them
    assert len(lean) == (1 if first == 0 else 0)  # each front was the one tested


@pytest.mark.parametrize("first", [0, 1])
async def test_a_failed_quarantine_after_the_head_still_cuts_the_body_short(
        node: tuple[str, int], monkeypatch: pytest.MonkeyPatch, first: int) -> None:
    """A later window fails its check and the disk refuses the quarantine's move (EROFS):
    the connection ends short, never with a 500 document appended to the 200's body."""
    host, port = node
    sid, body = await _stored(host, port, first)
    lean = _count_lean(monkeypatch)
    import nodes.shardget as shardget

    async def corrupt(self: ShardReadStream, max_bytes: int = 0) -> object:
        raise ShardCorrupt(self.shard_id, "frame 3 fails its checksum")

    async def refused(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(ShardReadStream, "verified_window", corrupt)
    monkeypatch.setattr(shardget, "quarantine", refused)
    answer = await _exchange(host, port, "GET",
                             f"/v1/shards/{sid}?first={first}&count={FRAMES}")
    head, got = _split(answer)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert 0 < len(got) < len(body)
    assert got == body[:len(got)]
    print("TAIL", len(got), len(body), got[-120:])
    assert b"HTTP/1.1 500" not in got
    assert len(lean) == (1 if first == 0 else 0)


async def test_any_failure_after_the_head_drops_the_connection(
        node: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The middleware's guard: an exception of any kind out of a handler whose response
    head is out closes the connection instead of writing a second response (from frame 1:
    aiohttp's handler)."""
    host, port = node
    sid, body = await _stored(host, port)
    import nodes.shardget as shardget

    async def broken(*args: object, **kwargs: object) -> bool:
        write = args[5]
        await write(b"x" * 1000)  # type: ignore[operator]
        raise RuntimeError("a bug past the head")

    monkeypatch.setattr(shardget, "send_body", broken)
    answer = await _exchange(host, port, "GET", f"/v1/shards/{sid}?first=1&count=2")
    head, got = _split(answer)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert got == b"x" * 1000
