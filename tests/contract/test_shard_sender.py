"""Whole-shard PUTs through the lean sender (`NodeClient.put_shard` with a bytes body or a
`ShardSlot`, `storage.shards.sender`) against a real node process: stored byte for byte, refusals carry
the node's status, keep-alive connections are reused, and a pooled connection the node
closed (the node restarted) is replaced by a new one with a freshly signed request.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from storage.config import NodeSpec
from storage.shards import connpool, sender
from storage.shards.auth import TRAILER_BYTES, load_or_create_secret
from storage.shards.client import NodeClient, NodeError
from storage.shards.format import pack_frame
from storage.shards.slot import HEAD_ROOM, ShardSlot
from tests.contract.node_harness import free_port, make_shard, start_node, stop_node
from tests.held_shards import shard_at


class RealNode:
    """One node process on a fixed port, restartable on the same data directory."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.key = base / "cluster.key"
        self.secret = load_or_create_secret(self.key)
        self.port = free_port()
        self.spec = NodeSpec("n1", "az1", f"127.0.0.1:{self.port}")
        self.proc = self._start()

    def _start(self):  # type: ignore[no-untyped-def]
        proc, _, _ = start_node(self.base, [
            "--id", "n1", "--listen", f"127.0.0.1:{self.port}", "--zone", "az1",
            "--data", str(self.base / "data"), "--secret-file", str(self.key)])
        return proc

    def restart(self) -> None:
        stop_node(self.proc)
        self.proc = self._start()

    def shard_file(self, sid: str) -> bytes:
        """The bytes the node stored for `sid` (its file, or its packed record)."""
        return shard_at(self.base / "data", sid).read_bytes()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RealNode]:
    n = RealNode(tmp_path_factory.mktemp("sender"))
    yield n  # type: ignore[misc]
    stop_node(n.proc)


@pytest.fixture
async def client(node: RealNode) -> AsyncIterator[NodeClient]:
    async with aiohttp.ClientSession() as s:
        c = NodeClient(s, node.secret)
        yield c
        c.close()


def _pooled(client: NodeClient, node: RealNode) -> int:
    return len(client._sender._pool.idle(node.spec))


async def test_whole_puts_are_stored_byte_for_byte_over_one_kept_connection(
        node: RealNode, client: NodeClient) -> None:
    for _ in range(3):
        sid, _, blocks, body = make_shard(index=2, frames=1, block_size=262144, last=None)
        await client.put_shard(node.spec, sid, body, len(blocks))
        assert node.shard_file(sid) == body
        assert _pooled(client, node) == 1  # the same connection carried every PUT


async def test_a_refused_whole_put_reports_the_node_status(
        node: RealNode, client: NodeClient) -> None:
    sid, h, blocks, body = make_shard(index=1, frames=2, block_size=4096, last=None)
    await client.put_shard(node.spec, sid, body, len(blocks))
    await client.put_shard(node.spec, sid, body, len(blocks))  # identical bytes: idempotent
    other = h.pack() + b"".join(pack_frame(h, i, os.urandom(4096)) for i in range(2))
    with pytest.raises(NodeError) as err:
        await client.put_shard(node.spec, sid, other, len(blocks))
    assert err.value.status == 409 and "shard_exists" in str(err.value)
    with pytest.raises(NodeError) as err:  # announced segment count wrong: 400
        await client.put_shard(node.spec, make_shard(index=3)[0], make_shard(index=3)[3], 9)
    assert err.value.status == 400
    assert node.shard_file(sid) == body


async def test_a_connection_the_node_closed_is_replaced_with_a_new_signature(
        node: RealNode, client: NodeClient) -> None:
    sid, _, blocks, body = make_shard(index=4, frames=1, block_size=8192, last=None)
    await client.put_shard(node.spec, sid, body, len(blocks))
    assert _pooled(client, node) == 1
    node.restart()  # the pooled connection is now closed by the (old) node
    sid2, _, blocks2, body2 = make_shard(index=5, frames=1, block_size=8192, last=None)
    await client.put_shard(node.spec, sid2, body2, len(blocks2))
    assert node.shard_file(sid2) == body2
    assert _pooled(client, node) == 1


def _slot(body: bytes, room: int = HEAD_ROOM) -> ShardSlot:
    """`body` in a buffer with `room` garbage bytes before it and garbage trailer room."""
    buf = bytearray(os.urandom(room)) + body + bytearray(os.urandom(TRAILER_BYTES))
    return ShardSlot(memoryview(buf), room)


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many pieces each request was handed to the transport in."""
    seen: list[int] = []
    real = sender._Conn.send

    def send(self: sender._Conn, pieces: list[bytes | memoryview]) -> None:
        seen.append(len(pieces))
        real(self, pieces)

    monkeypatch.setattr(sender._Conn, "send", send)
    return seen


async def test_a_shard_in_a_slot_goes_out_as_one_view_and_is_stored_byte_for_byte(
        node: RealNode, client: NodeClient, sends: list[int]) -> None:
    for index in (0, 1):
        sid, _, blocks, body = make_shard(index=index, frames=1, block_size=262144, last=None)
        await client.put_shard(node.spec, sid, _slot(body), len(blocks))
        assert node.shard_file(sid) == body
    assert sends == [1, 1]  # head, shard and trailer written as one view of the buffer
    assert _pooled(client, node) == 1


async def test_a_head_too_long_for_the_slot_s_room_is_sent_apart(
        node: RealNode, client: NodeClient, sends: list[int]) -> None:
    sid, _, blocks, body = make_shard(index=3, frames=1, block_size=4096, last=None)
    await client.put_shard(node.spec, sid, _slot(body, room=100), len(blocks))
    assert node.shard_file(sid) == body
    assert sends == [3]


async def test_a_slot_sent_again_on_a_new_connection_carries_the_new_signature(
        node: RealNode, client: NodeClient, sends: list[int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry after a pooled connection the node closed writes the new head and trailer
    into the same room: the node accepts it (a replayed nonce or a stale MAC would not)."""
    # a restart slower than IDLE_S (a loaded host) would retire the connection unused
    monkeypatch.setattr(connpool, "IDLE_S", 3600.0)
    sid, _, blocks, body = make_shard(index=0, frames=1, block_size=8192, last=None)
    await client.put_shard(node.spec, sid, _slot(body), len(blocks))
    node.restart()
    sid2, _, blocks2, body2 = make_shard(index=1, frames=1, block_size=8192, last=None)
    await client.put_shard(node.spec, sid2, _slot(body2), len(blocks2))
    assert node.shard_file(sid2) == body2
    assert sends == [1, 1, 1]  # the second PUT was sent twice, each time as one view
