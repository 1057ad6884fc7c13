"""`ShardSender.request_many` / `NodeClient.put_shards`: the six whole-shard PUTs of a
one-segment stripe sent from one coroutine. Against in-process fake nodes: every answer
collected, kept connections reused without a task per request, a refusal carries the
node's status, a node that refuses connections or stalls past the deadline fails alone
(its connection aborted, its slot given back), a reused connection the node dropped is
retried once on a new one, and a cancel mid-wait aborts every connection written to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from storage.config import NodeSpec
from storage.shards.client import NodeClient
from storage.shards.connpool import MAX_IN_FLIGHT, FetchError
from storage.shards.sender import ShardSender
from tests.contract.node_harness import free_port

BODY = b"x" * 70000


class FakeNode:
    """Answers each whole PUT by `mode`: ok (201), refuse (409), stall (never answers),
    drop2 (closes a connection when its second request arrives)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0  # whole requests received
        self.received = asyncio.Event()  # a whole request arrived
        self.lost = 0  # connections closed by the client
        self.lost_event = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.spec: NodeSpec | None = None

    async def start(self, name: str) -> NodeSpec:
        self.server = await asyncio.get_running_loop().create_server(
            lambda: _Proto(self), "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.spec = NodeSpec(name, "z", f"127.0.0.1:{port}")
        return self.spec


class _Proto(asyncio.Protocol):
    def __init__(self, node: FakeNode) -> None:
        self.node, self.buf, self.need, self.count = node, bytearray(), -1, 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.node.lost += 1
        self.node.lost_event.set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).decode("latin-1").lower()
                self.need = int(head.split("content-length:")[1].split("\r\n")[0])
                del self.buf[:end + 4]
                self.count += 1
                if self.node.mode == "drop2" and self.count == 2:
                    self.t.close()  # nothing answered: the client may retry afresh
                    return
            if len(self.buf) < self.need:
                return
            del self.buf[:self.need]
            self.need = -1
            self.node.requests += 1
            self.node.received.set()
            if self.node.mode == "ok" or (self.node.mode == "drop2" and self.count == 1):
                self.t.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
            elif self.node.mode == "refuse":
                msg = b'{"error":"shard_exists"}'
                self.t.write(b"HTTP/1.1 409 Conflict\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(msg), msg))


async def _nodes(*modes: str) -> list[FakeNode]:
    nodes = [FakeNode(m) for m in modes]
    for i, n in enumerate(nodes):
        await n.start(f"n{i}")
    return nodes


def _build(node: NodeSpec):  # type: ignore[no-untyped-def]
    head = (f"PUT /v1/shards/s HTTP/1.1\r\nHost: {node.address}\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n").encode()
    return lambda: [head, BODY]


def _slots_free(sender: ShardSender, nodes: list[FakeNode]) -> bool:
    return all(not sender._pool.slot(n.spec).locked()  # type: ignore[arg-type]
               and sender._pool.slot(n.spec)._value == MAX_IN_FLIGHT  # type: ignore[arg-type]
               for n in nodes)


@pytest.fixture
async def sender() -> AsyncIterator[ShardSender]:
    s = ShardSender(read_timeout_s=15.0)
    yield s
    s.close()


async def test_every_answer_is_collected_and_kept_connections_go_without_tasks(
        sender: ShardSender, monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = await _nodes(*["ok"] * 6)
    items = [(n.spec, _build(n.spec)) for n in nodes]  # type: ignore[arg-type]
    first = await sender.request_many(items, 20)  # nothing pooled yet: each in a task
    assert [o[0] for o in first] == [201] * 6  # type: ignore[index]
    assert all(len(sender._pool.idle(n.spec)) == 1 for n in nodes)  # type: ignore[arg-type]
    spawned: list[NodeSpec] = []
    real = sender._bounded

    async def counted(node: NodeSpec, *a: object) -> object:
        spawned.append(node)
        return await real(node, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(sender, "_bounded", counted)
    for _ in range(3):
        got = await sender.request_many(items, 20)
        assert got == [(201, b"{}")] * 6
    assert spawned == []  # every request written on its kept connection, no task
    assert all(n.requests == 4 for n in nodes)
    assert all(len(sender._pool.idle(n.spec)) == 1 for n in nodes)  # type: ignore[arg-type]
    assert _slots_free(sender, nodes)


async def test_a_refusal_and_an_unreachable_node_fail_alone(sender: ShardSender) -> None:
    nodes = await _nodes("ok", "refuse", "ok")
    down = NodeSpec("down", "z", f"127.0.0.1:{free_port()}")  # nobody listens
    items = [(n.spec, _build(n.spec)) for n in nodes] + [(down, _build(down))]  # type: ignore[arg-type]
    for _ in range(2):  # from new connections, then from kept ones
        got = await sender.request_many(items, 20)
        assert got[0] == got[2] == (201, b"{}")
        assert got[1] == (409, b'{"error":"shard_exists"}')
        assert isinstance(got[3], FetchError) and got[3].node_id == "down"
    assert _slots_free(sender, nodes)


async def test_a_node_stalling_past_the_deadline_fails_alone(sender: ShardSender) -> None:
    nodes = await _nodes("ok", "ok", "ok")
    items = [(n.spec, _build(n.spec)) for n in nodes]  # type: ignore[arg-type]
    await sender.request_many(items, 20)  # kept connections: the next go the fast way
    nodes[1].mode = "stall"
    # the deadline is the stall's bound; the two others answer well inside it (0.2 s was
    # short enough for a loaded box's stall to time them out too)
    got = await sender.request_many(items, 2.0)
    assert got[0] == got[2] == (201, b"{}")
    assert isinstance(got[1], TimeoutError)
    await nodes[1].lost_event.wait()  # the stalled connection was aborted
    assert nodes[1].lost == 1 and nodes[1].requests == 2
    assert sender._pool.idle(nodes[1].spec) == []  # type: ignore[arg-type]
    nodes[1].lost_event.clear()
    got = await sender.request_many(items[1:2], 0.2)  # no kept connection: in a task
    assert isinstance(got[0], TimeoutError)
    await nodes[1].lost_event.wait()
    assert nodes[1].lost == 2 and nodes[1].requests == 3
    assert _slots_free(sender, nodes)


async def test_the_read_timeout_names_the_silence_when_it_comes_first() -> None:
    nodes = await _nodes("ok", "stall")
    s = ShardSender(read_timeout_s=2.0)  # the silent one's bound; the other answers inside it
    try:
        items = [(n.spec, _build(n.spec)) for n in nodes]  # type: ignore[arg-type]
        await s.request_many(items[:1], 20)
        got = await s.request_many(items, 20)
        assert got[0] == (201, b"{}")
        assert isinstance(got[1], FetchError) and "no answer for" in got[1].reason
    finally:
        s.close()


async def test_a_kept_connection_the_node_dropped_is_retried_once_afresh(
        sender: ShardSender) -> None:
    nodes = await _nodes("drop2", "ok")
    items = [(n.spec, _build(n.spec)) for n in nodes]  # type: ignore[arg-type]
    await sender.request_many(items, 20)
    got = await sender.request_many(items, 20)  # n0 closes the kept connection unanswered
    assert got == [(201, b"{}")] * 2
    assert nodes[0].requests == 2  # the retry, on a new connection, was answered
    assert _slots_free(sender, nodes)


async def test_a_cancel_mid_wait_aborts_every_connection_written_to(
        sender: ShardSender) -> None:
    nodes = await _nodes("ok", "ok", "ok")
    items = [(n.spec, _build(n.spec)) for n in nodes]  # type: ignore[arg-type]
    await sender.request_many(items, 20)
    for n in nodes:
        n.mode, n.received = "stall", asyncio.Event()
    waiting = asyncio.create_task(sender.request_many(items, 20))
    for n in nodes:
        await n.received.wait()  # every request is written and received; none answered
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    for n in nodes:
        await n.lost_event.wait()
    assert all(n.lost == 1 for n in nodes)
    assert all(sender._pool.idle(n.spec) == [] for n in nodes)  # type: ignore[arg-type]
    assert _slots_free(sender, nodes)


async def test_put_shards_reports_each_failure_as_put_shard_would() -> None:
    nodes = await _nodes("ok", "refuse", "stall")
    down = NodeSpec("down", "z", f"127.0.0.1:{free_port()}")
    from storage.shards.auth import TRAILER_BYTES
    from storage.shards.slot import HEAD_ROOM, ShardSlot

    def slot() -> ShardSlot:
        return ShardSlot(memoryview(bytearray(HEAD_ROOM + 5000 + TRAILER_BYTES)), HEAD_ROOM)

    async with aiohttp.ClientSession() as session:
        client = NodeClient(session, b"s" * 32)
        try:
            puts = [(n.spec, f"{i:064x}", slot()) for i, n in enumerate(nodes)]
            puts.append((down, "d" * 64, slot()))
            errors = await client.put_shards(puts, 0.3)  # type: ignore[arg-type]
        finally:
            client.close()
    assert errors[0] is None
    assert errors[1] is not None and "PUT 409" in errors[1] and "n1" in errors[1]
    assert errors[2] == "node n2 did not confirm within 0s"
    assert errors[3] is not None and "down" in errors[3]
