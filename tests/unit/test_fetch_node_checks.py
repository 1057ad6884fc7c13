"""The lean shard fetcher's node re-checks (`storage.shards.fetch`, `storage.shards.nodechecks`)
against a scripted node: a frame that fails the gateway's check raises ShardCorrupt at once
and is asked for once more, with the node checking, in the background; so is one that
arrived bad but was never pulled (the reader stopped first). One re-check per failing
stream, none for bytes past the last frame; a cancelled check leaves no buffer or
connection behind; the checks are bounded in number and time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from ops.localports import free_port
from storage.config import NodeSpec
from storage.errors import ShardCorrupt
from storage.shards.fetch import ShardFetcher
from storage.shards.format import FRAME_HEAD_BYTES, HEADER_BYTES, READER_CHECKS_HEADER
from storage.shards.nodechecks import NodeChecks
from tests.contract.node_harness import make_shard
from tests.fetch_helpers import CountingPool, frame_failures

FRAMES, BLOCK = 6, 64 * 1024
HANG_S = 120  # bounds a hang (the old code's); never reached when the code is right

Request = tuple[int, int, bool]  # first, count, the reader checks (header sent)


class ScriptedNode:
    """A node that answers each shard GET with what `answer(first, count, reader_checks)`
    returns (None: nothing, until the connection closes) and records the requests."""

    def __init__(self, answer: Callable[[int, int, bool], Awaitable[bytes | None]]) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        self.arrived = asyncio.Event()  # a request arrived (cleared by whoever waits)
        self.hung_up = asyncio.Event()  # a client closed its connection
        self.server: asyncio.Server | None = None
        self.port = 0
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def __aenter__(self) -> ScriptedNode:
        self.port = free_port()
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        handlers = list(self._conns)
        for task in handlers:  # a handler's end is quiet (no "exception never retrieved")
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def spec(self) -> NodeSpec:
        return NodeSpec(id="n1", zone="az1", address=f"127.0.0.1:{self.port}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                q = parse_qs(urlsplit(head.split()[1]).query)
                req = (int(q["first"][0]), int(q["count"][0]),
                       READER_CHECKS_HEADER.lower() in head.lower())
                self.requests.append(req)
                self.arrived.set()
                data = await self.answer(*req)
                if data is None:
                    await reader.read()  # until the client hangs up
                    break
                writer.write(data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client hung up, or the test is over
        finally:
            self.hung_up.set()
            writer.transport.abort()
            del self._conns[task]


def ok(body: bytes) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


CORRUPT = b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n"


def frames_of(body: bytes, first: int, count: int, flip: int | None = None) -> bytes:
    """The node's answer body for frames [first, first+count) of shard file `body`, with a
    bit of frame `flip`'s block flipped."""
    out = bytearray(body[:HEADER_BYTES])
    for seg in range(first, first + count):
        start = HEADER_BYTES + seg * (FRAME_HEAD_BYTES + BLOCK)
        frame = bytearray(body[start:start + FRAME_HEAD_BYTES + BLOCK])
        if seg == flip:
            frame[FRAME_HEAD_BYTES + 9] ^= 0x04
        out += frame
    return bytes(out)


@pytest.fixture
async def fetcher() -> AsyncIterator[ShardFetcher]:
    f = ShardFetcher(b"s" * 32, read_timeout_s=3600)
    f.checks.timeout_s = 3600  # tests end checks themselves (or set a short bound)
    yield f
    f.close()


async def test_a_bad_frame_raises_at_once_and_the_node_checks_it_after(
        fetcher: ShardFetcher) -> None:
    """The read does not wait for the node's answer (a node with a failing disk may stall):
    ShardCorrupt comes while the re-check is still out; the node answers it later."""
    sid, h, _, body = make_shard(frames=FRAMES, block_size=BLOCK, last=None)
    release = asyncio.Event()

    async def answer(first: int, count: int, checks: bool) -> bytes:
        if checks:
            return ok(frames_of(body, first, count, flip=2))
        await release.wait()
        return CORRUPT  # the node checked the frame: bad on its disk (it quarantines)

    pool = CountingPool()
    async with ScriptedNode(answer) as node:
        got: list[int] = []
        async with asyncio.timeout(HANG_S):
            with pytest.raises(ShardCorrupt, match="segment 2 of shard 1: checksum mismatch"):
                async for seg, _, buf in fetcher.frames(node.spec(), sid, h, 0, FRAMES, pool):
                    got.append(seg)
                    pool.give(buf)
        assert got == [0, 1]
        assert len(fetcher.checks) == 1 and not release.is_set()  # still out
        release.set()
        await fetcher.checks.wait()
        assert node.requests == [(0, FRAMES, True), (2, 1, False)]  # one re-check, of it
        assert len(fetcher.checks) == 0 and pool.out == 0


async def test_a_bad_frame_the_reader_stopped_before_is_still_checked(
        fetcher: ShardFetcher, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frame 3 arrived bad while the reader held frame 1, and the reader stopped there (an S3
    client hung up, `read_blocks` closed a spare): the node is still asked to check it."""
    sid, h, _, body = make_shard(frames=FRAMES, block_size=BLOCK, last=None)
    failed = frame_failures(monkeypatch)

    async def answer(first: int, count: int, checks: bool) -> bytes:
        return ok(frames_of(body, first, count, flip=3)) if checks else CORRUPT

    pool = CountingPool()
    async with ScriptedNode(answer) as node:
        frames = fetcher.frames(node.spec(), sid, h, 0, FRAMES, pool)
        async with asyncio.timeout(HANG_S):
            for want in (0, 1):
                seg, _, buf = await anext(frames)
                assert seg == want
                pool.give(buf)
            await failed.wait()  # frame 3 arrived and failed its check, unpulled
        await frames.aclose()
        await fetcher.checks.wait()
        assert node.requests == [(0, FRAMES, True), (3, 1, False)]
        assert pool.out == 0


async def test_in_transit_damage_one_recheck_and_bytes_past_the_end_none(
        fetcher: ShardFetcher) -> None:
    """A frame damaged on the way (the node finds it fine) costs one re-check, nothing more;
    bytes after the last frame asked for are no frame of the shard: no re-check."""
    sid, h, blocks, body = make_shard(frames=FRAMES, block_size=BLOCK, last=None)
    extra = False

    async def answer(first: int, count: int, checks: bool) -> bytes:
        if not checks:
            return ok(frames_of(body, first, count))  # checked on the node: fine
        return ok(frames_of(body, first, count) + b"x" * 10 if extra
                  else frames_of(body, first, count, flip=4))

    pool = CountingPool()
    async with ScriptedNode(answer) as node:
        async with asyncio.timeout(HANG_S):
            with pytest.raises(ShardCorrupt, match="segment 4"):
                async for _, _, buf in fetcher.frames(node.spec(), sid, h, 0, FRAMES, pool):
                    pool.give(buf)
        await fetcher.checks.wait()
        assert node.requests == [(0, FRAMES, True), (4, 1, False)]
        extra = True
        node.requests.clear()
        got = []
        async with asyncio.timeout(HANG_S):
            with pytest.raises(ShardCorrupt, match="bytes after the last frame"):
                async for seg, view, buf in fetcher.frames(node.spec(), sid, h, 1, 2, pool):
                    got.append((seg, bytes(view)))
                    pool.give(buf)
        await fetcher.checks.wait()
        assert got == [(1, blocks[1]), (2, blocks[2])]
        assert node.requests == [(1, 2, True)]
        assert pool.out == 0


@pytest.mark.parametrize("sent", ["nothing", "half a frame"])
async def test_a_cancelled_check_gives_back_its_buffer_and_connection(
        fetcher: ShardFetcher, sent: str) -> None:
    """The node stalls, before its answer's head or halfway through the frame; the check is
    cancelled (its time is up, the gateway shuts down): by the time it has ended, the
    partial block's buffer is back and the connection is closed. (A cancellation while
    waiting for the head left the connection open and out of the pool for good.)"""
    sid, h, _, body = make_shard(frames=FRAMES, block_size=BLOCK, last=None)
    whole = frames_of(body, 2, 1)
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(whole)}\r\n\r\n".encode()

    async def answer(first: int, count: int, checks: bool) -> bytes | None:
        if sent == "nothing":
            return None
        return head + whole[:HEADER_BYTES + FRAME_HEAD_BYTES + BLOCK // 2]  # no more

    pool = CountingPool()
    async with ScriptedNode(answer) as node:
        check = asyncio.create_task(fetcher._node_check(node.spec(), sid, h, 2, pool))
        async with asyncio.timeout(HANG_S):
            await node.arrived.wait()
            while sent != "nothing" and pool.out == 0:  # until half the block arrived
                await asyncio.sleep(0.01)
        check.cancel()
        with pytest.raises(asyncio.CancelledError):
            await check
        assert pool.out == 0
        async with asyncio.timeout(HANG_S):
            await node.hung_up.wait()


async def test_node_checks_are_bounded_in_number_and_time() -> None:
    checks = NodeChecks(limit=2, timeout_s=3600)
    ended: list[str] = []
    hold = asyncio.Event()

    async def check(name: str) -> None:
        try:
            await hold.wait()
        finally:
            ended.append(name)

    assert checks.start(("n1", "a"), lambda: check("a"))
    assert not checks.start(("n1", "a"), lambda: check("a2"))  # one per shard at a time
    assert checks.start(("n2", "a"), lambda: check("b"))
    assert not checks.start(("n1", "c"), lambda: check("c"))  # the limit
    assert len(checks) == 2 and checks.dropped == 2
    hold.set()
    await checks.wait()
    assert sorted(ended) == ["a", "b"] and len(checks) == 0
    assert checks.start(("n1", "a"), lambda: check("a3"))  # ended: may run again
    await checks.wait()

    hold.clear()
    checks.timeout_s = 0.01  # a check that never ends is given up
    assert checks.start(("n1", "d"), lambda: check("d"))
    await checks.wait()
    assert ended[-1] == "d" and len(checks) == 0

    checks.timeout_s = 3600  # close cancels what still runs
    assert checks.start(("n1", "e"), lambda: check("e"))
    await asyncio.sleep(0)
    checks.close()
    await checks.wait()
    assert ended[-1] == "e" and len(checks) == 0
