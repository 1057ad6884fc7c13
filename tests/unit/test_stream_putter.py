"""Streamed shard PUTs of a known length go out from views on sockets of their own
(`storage.shards.streamput.StreamPutter`), not through aiohttp: the bytes on the wire, the
answer, keep-alive reuse, a socket the node closed, a refusal, silence and cancellation.
A small asyncio server stands in for the node."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from storage.config import NodeSpec
from storage.shards import auth
from storage.shards.client import NodeClient, NodeError
from storage.shards.connpool import FetchError
from storage.shards.streamput import StreamPutter

BIG = bytes(range(256)) * (32 * 1024)  # 8 MiB: more than a socket takes in one send


class FakeNode:
    """Reads one request head and its Content-Length body per exchange, records both,
    answers `status` (or nothing, or closes after the head: see the flags)."""

    def __init__(self, status: int = 201, *, close_after: bool = False,
                 silent: bool = False, refuse_at_head: bool = False) -> None:
        self.status, self.close_after, self.silent = status, close_after, silent
        self.refuse_at_head = refuse_at_head
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body) read whole
        self.connections = 0
        self.short: list[int] = []  # bytes of bodies cut short
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1") -> NodeSpec:
        self.server = await asyncio.start_server(self._serve, host, 0)
        port = self.server.sockets[0].getsockname()[1]
        return NodeSpec("n1", "az1", f"{host}:{port}" if ":" not in host else f"[{host}]:{port}")

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await r.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                if self.refuse_at_head:
                    w.write(b"HTTP/1.1 409 Conflict\r\nContent-Length: 6\r\n"
                            b"Connection: close\r\n\r\nno way")
                    await w.drain()
                    return
                try:
                    body = await r.readexactly(length)
                except asyncio.IncompleteReadError as exc:
                    self.short.append(len(exc.partial))
                    return
                self.requests.append((head, body))
                if self.silent:
                    await asyncio.Event().wait()
                answer = b'{"ok":true}'
                w.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (self.status, len(answer), answer))
                await w.drain()
                if self.close_after:
                    return
        finally:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
            self.closed.set()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes | memoryview]:
    for p in parts:
        yield memoryview(p)


def _head(spec: NodeSpec, length: int) -> bytes:
    return (f"PUT /v1/shards/x HTTP/1.1\r\nHost: {spec.address}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


@contextlib.asynccontextmanager
async def _putting(node: FakeNode, **kw: float) -> AsyncIterator[tuple[NodeSpec, StreamPutter]]:
    """`node` started and a putter for it; both closed after."""
    spec = await node.start()
    putter = StreamPutter(**kw)
    try:
        yield spec, putter
    finally:
        putter.close()
        await node.stop()


async def test_bodies_arrive_byte_exact_and_the_socket_is_reused() -> None:
    node = FakeNode()
    async with _putting(node) as (spec, putter):
        for n in range(2):
            body = [BIG, b"tail%d" % n]
            status, answer = await putter.put(spec, _head(spec, len(BIG) + 5), _chunks(*body))
            assert (status, answer) == (201, b'{"ok":true}')
            assert node.requests[-1][1] == b"".join(body)
            assert putter.idle(spec) == 1
        assert node.connections == 1


async def test_a_socket_the_node_closed_while_idle_is_not_reused() -> None:
    node = FakeNode(close_after=True)
    async with _putting(node) as (spec, putter):
        assert (await putter.put(spec, _head(spec, 3), _chunks(b"abc")))[0] == 201
        await node.closed.wait()
        assert (await putter.put(spec, _head(spec, 3), _chunks(b"def")))[0] == 201
        assert node.connections == 2
        assert [b for _, b in node.requests] == [b"abc", b"def"]


async def test_a_refusal_before_the_body_is_an_error_and_the_socket_is_dropped() -> None:
    node = FakeNode(refuse_at_head=True)
    async with _putting(node) as (spec, putter):
        # The node answers and closes at once: sending fails, or the socket takes it all
        # (when the answer is read). Either way, the put yields the node's answer.
        status, answer = await putter.put(spec, _head(spec, len(BIG) * 4),
                                          _chunks(BIG, BIG, BIG, BIG))
        assert (status, answer) == (409, b"no way")
        assert putter.idle(spec) == 0


async def test_no_answer_within_the_read_timeout_is_an_error() -> None:
    node = FakeNode(silent=True)
    async with _putting(node, read_timeout_s=0.2) as (spec, putter):
        with pytest.raises(FetchError, match="no answer"):
            await putter.put(spec, _head(spec, 3), _chunks(b"abc"))
        assert putter.idle(spec) == 0


async def test_a_cancelled_put_closes_its_socket_and_the_node_sees_a_short_body() -> None:
    node = FakeNode()
    sent = asyncio.Event()

    async def stuck() -> AsyncIterator[bytes]:
        yield b"first"
        sent.set()
        await asyncio.Event().wait()
        yield b"never"

    async with _putting(node) as (spec, putter):
        task = asyncio.create_task(putter.put(spec, _head(spec, 10), stuck()))
        await sent.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await node.closed.wait()
        assert node.short == [5] and node.requests == []
        assert putter.idle(spec) == 0


async def _client_without_aiohttp() -> NodeClient:
    """A NodeClient whose aiohttp session is closed: only the stream putter can carry a PUT."""
    session = aiohttp.ClientSession()
    await session.close()
    return NodeClient(session, b"k" * 32)


async def test_node_client_streams_a_put_with_a_length_without_aiohttp() -> None:
    """The aiohttp session is closed: only the stream putter can carry the PUT."""
    node = FakeNode()
    spec = await node.start()
    client = await _client_without_aiohttp()
    try:
        await client.put_shard(spec, "s1", _chunks(BIG, b"end"), 3, len(BIG) + 3)
        head, body = node.requests[0]
        assert head.startswith(b"PUT /v1/shards/s1 HTTP/1.1\r\n")
        assert b"\r\nContent-Length: %d\r\n" % (len(BIG) + 3 + auth.TRAILER_BYTES) in head
        assert b"\r\nX-Tessera-Segments: 3\r\n" in head
        assert body[:-auth.TRAILER_BYTES] == BIG + b"end"
        node.status = 507
        with pytest.raises(NodeError) as err:
            await client.put_shard(spec, "s2", _chunks(b"x"), 1, 1)
        assert err.value.status == 507
    finally:
        client.close()
        await node.stop()


async def test_a_body_longer_than_announced_is_refused_and_the_socket_never_pooled() -> None:
    """Nothing past the Content-Length goes out (aiohttp cut it there): the extra bytes
    would be the start of the next request on a pooled socket (review11a). The socket is
    closed, so the node sees a short body, and the next put goes through clean."""
    node = FakeNode()
    async with _putting(node) as (spec, putter):
        with pytest.raises(FetchError, match="longer than its Content-Length"):
            await putter.put(spec, _head(spec, 3), _chunks(b"ab", b"cdef"))
        assert putter.idle(spec) == 0
        await node.closed.wait()
        assert node.short == [2] and node.requests == []
        assert await putter.put(spec, _head(spec, 3), _chunks(b"xyz")) == (201, b'{"ok":true}')
        assert [b for _, b in node.requests] == [b"xyz"]


async def test_a_body_shorter_than_announced_fails_at_once_not_at_the_read_timeout() -> None:
    node = FakeNode()
    async with _putting(node, read_timeout_s=60.0) as (spec, putter):
        async with asyncio.timeout(30):  # (the old code waited out the 60 s read timeout)
            with pytest.raises(FetchError, match="3 bytes short of its Content-Length"):
                await putter.put(spec, _head(spec, 10), _chunks(b"abc", b"defg"))
        assert putter.idle(spec) == 0
        await node.closed.wait()
        assert node.short == [7] and node.requests == []


async def test_an_idle_socket_the_node_closes_is_closed_at_once_not_left_in_close_wait() -> None:
    node = FakeNode(close_after=True)
    async with _putting(node) as (spec, putter):
        assert (await putter.put(spec, _head(spec, 3), _chunks(b"abc")))[0] == 201
        [(sock, _)] = putter._idle[spec.address]
        await node.closed.wait()
        async with asyncio.timeout(30):  # (the old code kept it until the next put)
            while putter.idle(spec):
                await asyncio.sleep(0)
        assert sock.fileno() == -1


async def test_idle_sockets_past_the_age_limit_are_closed_from_the_bottom_of_the_stack() -> None:
    """The oldest idle sockets (the bottom: reuse takes the newest) age out too."""
    from storage.shards.connpool import IDLE_S

    node = FakeNode()
    async with _putting(node) as (spec, putter):
        both = await asyncio.gather(*(putter.put(spec, _head(spec, 1), _chunks(b"%d" % i))
                                      for i in range(2)))
        assert [s for s, _ in both] == [201, 201] and putter.idle(spec) == 2
        stack = putter._idle[spec.address]
        old, since = stack[0]
        stack[0] = (old, since - IDLE_S)  # the bottom one has been idle too long
        young = stack[1][0]
        assert (await putter.put(spec, _head(spec, 1), _chunks(b"z")))[0] == 201
        assert old.fileno() == -1
        assert [s for s, _ in putter._idle[spec.address]] == [young]
        assert node.connections == 2


async def test_a_node_name_is_resolved_and_each_address_tried_in_turn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that resolves to a dead IPv4 address, then the IPv6 one the node listens on
    (an IPv6-only name must work, as with `create_connection`)."""
    import socket

    node = FakeNode()
    try:
        v6 = await node.start("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = int(v6.address.rpartition(":")[2])
    dead = socket.socket()  # bound, never listening: a connect is refused
    dead.bind(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    asked: list[tuple[str, int]] = []

    async def getaddrinfo(host: str, port_: int, **_: object) -> list[tuple]:
        asked.append((host, port_))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", dead.getsockname()),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    spec = NodeSpec("n1", "az1", f"node-v6.invalid:{port}")
    putter = StreamPutter()
    try:
        assert await putter.put(spec, _head(spec, 3), _chunks(b"abc")) == (201, b'{"ok":true}')
        assert asked == [("node-v6.invalid", port)] and node.connections == 1
    finally:
        putter.close()
        dead.close()
        await node.stop()


async def test_node_client_put_longer_than_its_length_leaves_the_next_put_clean() -> None:
    """review11a's probe: `put_shard(..., length=len(body) - 100)` then a valid put to the
    same node. The extra bytes once reached the node as the head of the next request."""
    node = FakeNode()
    spec = await node.start()
    client = await _client_without_aiohttp()
    try:
        with pytest.raises(NodeError, match="longer than its Content-Length"):
            await client.put_shard(spec, "s1", _chunks(BIG), 1, len(BIG) - 100)
        assert client._streams.idle(spec) == 0
        await client.put_shard(spec, "s2", _chunks(b"next"), 1, 4)
        [(head, body)] = node.requests
        assert head.startswith(b"PUT /v1/shards/s2 HTTP/1.1\r\n")
        assert body[:-auth.TRAILER_BYTES] == b"next"
    finally:
        client.close()
        await node.stop()
