"""review21i: worker 0's batcher checks a forwarded commit's `wanted` (its sender's give-up
time less `give_up_margin()`) once, when the commit is taken for a request; EtcdStore._rpc
then sends a write to the next member when the first "never sent" it (a connection attempt
gives up after 2 s) or had no leader: that second send is not checked, so it can reach etcd
after the sender told its caller "outcome unknown"."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from storage.errors import StorageError
from storage.metadata import Txn, etcd_share
from storage.metadata.etcd import EtcdStore
from storage.metadata.etcd_batch import NotSent
from storage.metadata.etcd_share import SharedCommits
from storage.metadata.etcdpb import etcd_wire_pb2 as pb


class Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


NEVER_SENT = Failed(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")


class FakeKV:
    """Member 0 is cut off: its connection attempt gives up (after CONNECT_S, scaled down
    from grpc's 2 s); member 1 answers, and records when it was sent the write."""

    CONNECT_S = 0.6

    def __init__(self) -> None:
        self.sent_at: list[tuple[int, float]] = []
        self.bodies: list[bytes] = []  # what the members that answered got
        self.tried = False  # member 0 was sent the write (it never reached it)

    async def call(self, idx: int, rpc: str, request: object, timeout_s: float) -> object:
        if idx == 0:
            self.tried = True
            await asyncio.sleep(self.CONNECT_S)
            raise NEVER_SENT
        self.sent_at.append((idx, time.monotonic()))
        self.bodies.append(bytes(request))  # type: ignore[call-overload]
        return pb.TxnResponse(succeeded=True)

    def close(self) -> None:
        pass


async def test_a_write_failed_over_to_another_member_is_not_sent_past_its_wanted() -> None:
    store = EtcdStore(("http://127.0.1.10:2379", "http://127.0.2.10:2379"), None, "/v3")  # type: ignore[arg-type]
    store._relook = lambda: None  # type: ignore[method-assign]
    kv = store._kv = FakeKV()  # type: ignore[assignment]
    # worker 0's `wanted` (before give_up - give_up_margin()) turns false while the first
    # member's connection attempt runs (it did when taken: the check passed)
    with pytest.raises(NotSent):  # its sender sends it itself
        await store._batcher.run(Txn(compares={b"k": 0}, puts={b"k": b"v"}), (),
                                 lambda: not kv.tried)
    assert kv.tried, "the write was not even taken (the check failed at take time)"
    assert not kv.sent_at, "sent to member 1 after it was no longer wanted"


async def test_a_direct_commit_sharing_the_failed_over_request_is_still_sent() -> None:
    """mend21i: worker 0's own commit (no `wanted`) in the same request as a forwarded one
    no longer wanted at the fail-over is not answered "unsent" (its caller has no one to send
    it): it is queued again and sent once, without the forwarded one."""
    store = EtcdStore(("http://127.0.1.10:2379", "http://127.0.2.10:2379"), None, "/v3")  # type: ignore[arg-type]
    store._relook = lambda: None  # type: ignore[method-assign]
    kv = store._kv = FakeKV()  # type: ignore[assignment]
    forwarded = store._batcher.run(Txn(compares={b"f": 0}, puts={b"f": b"F"}), (),
                                   lambda: not kv.tried)
    direct = store._batcher.run(Txn(compares={b"d": 0}, puts={b"d": b"D"}), ())
    got = await asyncio.gather(forwarded, direct, return_exceptions=True)
    assert isinstance(got[0], NotSent), got[0]
    assert got[1] == (True, {}), got[1]
    [body] = kv.bodies
    assert b"D" in body and b"F" not in body, body


async def test_a_connection_worker_0_closed_leaves_no_watch_task(tmp_path: Any) -> None:
    """review21i: each connection worker 0 closes (EOF) must take its ping watcher with it
    (b3dc98ed's `_drop` cancelled it); on adc68cc1 `_watch` waits on that link's `busy`
    forever: one pending task (and its link) per connection, never collected."""
    sock = tmp_path / "txn.sock"
    conns: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        async for frame in etcd_share._frames(reader, etcd_share.MAX_FRAME):
            if frame == [0]:
                writer.write(etcd_share._pack([0]))

    async def local(txn: Txn, reads: tuple[bytes, ...]) -> Any:
        return True, {}

    server = await asyncio.start_unix_server(serve, str(sock))
    s = SharedCommits(sock, local, StorageError)
    try:
        for _ in range(3):
            while s._link is None:
                s._away_until = 0.0
                if not await s._connected() and s._connecting is not None:
                    await s._connecting
            conns[-1].close()  # worker 0 closes it (a restart, a frame it refused)
            async with asyncio.timeout(10):
                while s._link is not None:
                    await asyncio.sleep(0.01)
        watching = [t for t in asyncio.all_tasks()
                    if t.get_coro().__qualname__ == "SharedCommits._watch"]
        assert not watching, f"{len(watching)} ping watchers left on closed connections"
    finally:
        await s.close()
        server.close()
