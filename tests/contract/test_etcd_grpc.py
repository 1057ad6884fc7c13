"""The etcd store's keys travel over etcd's gRPC KV service (storage/metadata/etcd_grpc.py),
against the contract session's real 3-member cluster: no KV call goes through the JSON
gateway, an answer bigger than grpc's default 4 MiB arrives, and a write that could not
reach a member goes to the next one."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import threading
from typing import Any

import grpc
import pytest

from storage.metadata import Txn, etcd_grpc
from storage.metadata.etcd import EtcdStore
from storage.metadata.etcd_grpc import GrpcKV
from storage.metadata.etcdpb import etcd_wire_pb2 as pb
from tests.contract.conftest import session_tls
from tests.integration.cluster import free_port

pytestmark = pytest.mark.skipif(not os.environ.get("TESSERA_ETCD_ENDPOINTS"),
                                reason="no etcd cluster (etcd not installed)")


def _endpoints() -> tuple[str, ...]:
    return tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(","))


@pytest.fixture
def ns() -> bytes:
    return b"grpc/" + secrets.token_hex(4).encode() + b"/"


async def test_no_kv_call_goes_through_the_json_gateway(etcd: EtcdStore, ns: bytes) -> None:
    async def refused(path: str, body: dict[str, Any], idempotent: bool) -> dict[str, Any]:
        raise AssertionError(f"JSON gateway call {path}")

    etcd._call = refused  # type: ignore[method-assign]
    rev = await etcd.put(ns + b"a", b"1")
    assert rev > 0 and (await etcd.get(ns + b"a")).value == b"1"  # type: ignore[union-attr]
    assert await etcd.txn(Txn(compares={ns + b"b": 0}, puts={ns + b"b": b"2"}))
    done, seen = await etcd.txn_or_read(Txn(compares={ns + b"b": 0}, puts={ns + b"b": b"3"}),
                                        (ns + b"b",))
    assert not done and seen[ns + b"b"].value == b"2"  # type: ignore[union-attr]
    items = await etcd.range(ns, ns + b"\xff", reverse=True)
    assert [i.key for i in items] == [ns + b"b", ns + b"a"]
    [first, none], rest = await etcd.get_and_range((ns + b"a", ns + b"c"), ns, ns + b"\xff", 10)
    assert first is not None and first.revision == rev and none is None and len(rest) == 2
    assert await etcd.delete(ns + b"a") and not await etcd.delete(ns + b"a")
    await etcd.scrub()


async def test_an_answer_over_grpcs_default_limit_arrives(etcd: EtcdStore, ns: bytes) -> None:
    """grpc refuses answers over 4 MiB unless the channel allows them; a range of big
    records (or a record with its inline bodies) may be bigger."""
    value = os.urandom(1024 * 1024)
    for i in range(5):
        await etcd.put(ns + b"big%d" % i, value)
    try:
        items = await etcd.range(ns, ns + b"\xff")
        assert len(items) == 5 and all(i.value == value for i in items)
    finally:
        for i in range(5):
            await etcd.delete(ns + b"big%d" % i)


async def test_a_write_that_reached_no_member_goes_to_the_next(ns: bytes) -> None:
    dead = f"https://127.0.0.1:{free_port(['127.0.0.1'])}"
    store = await EtcdStore.open((dead, *_endpoints()), session_tls())
    try:
        store._current = 0  # as if the member in use had just gone away
        sent = store.round_trips
        assert await store.put(ns + b"w", b"v") > 0
        assert store.endpoint != dead and store.round_trips - sent == 2
        assert await store.delete(ns + b"w")
    finally:
        await store.close()


@pytest.fixture
def thread_starts(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """Every thread started from now on (grpcio starts its own through threading)."""
    started: list[threading.Thread] = []
    real = threading.Thread.start

    def counted(self: threading.Thread) -> None:
        started.append(self)
        real(self)

    monkeypatch.setattr(threading.Thread, "start", counted)
    return started


async def test_calls_one_after_another_start_no_thread_each(
        thread_starts: list[threading.Thread]) -> None:
    """grpcio polls a channel on a thread that lives while a call is open: without a call
    held open, each call made when none was in flight (the batchers' usual case) started
    one. Closing ends every thread the client started."""
    kv = GrpcKV(_endpoints()[:1], session_tls())
    get = pb.RangeRequest(key=b"grpc/none")
    try:
        await kv.call(0, "Range", get, 10)  # opens the channel (and what it holds open)
        opened = len(thread_starts)
        for _ in range(20):
            await kv.call(0, "Range", get, 10)
        assert len(thread_starts) == opened, [t.name for t in thread_starts[opened:]]
    finally:
        kv.close()
    for t in thread_starts:
        t.join(10)
    assert not [t.name for t in thread_starts if t.is_alive()]


async def test_a_held_call_that_ended_is_opened_again(
        thread_starts: list[threading.Thread], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_grpc, "KEEPER_RETRY_S", 0.0)
    kv = GrpcKV(_endpoints()[:1], session_tls())
    get = pb.RangeRequest(key=b"grpc/none")
    try:
        await kv.call(0, "Range", get, 10)
        ended = kv._keepers[0]
        ended.close()  # as when its member restarts
        await kv.call(0, "Range", get, 10)  # opens another
        assert kv._keepers[0] is not ended and kv._keepers[0].alive
        opened = len(thread_starts)
        for _ in range(10):
            await kv.call(0, "Range", get, 10)
        assert len(thread_starts) == opened
    finally:
        kv.close()
    for t in thread_starts:
        t.join(10)
    assert not [t.name for t in thread_starts if t.is_alive()]


async def test_a_member_that_cannot_be_reached_leaves_no_thread_waiting(
        thread_starts: list[threading.Thread]) -> None:
    """The held call fails with its connection; the thread grpcio consumes its (empty)
    requests on then ends too, before the client is closed."""
    kv = GrpcKV((f"http://127.0.0.1:{free_port(['127.0.0.1'])}",))
    try:
        with pytest.raises(grpc.RpcError):
            await kv.call(0, "Range", pb.RangeRequest(key=b"x"), 10)
        keeper, grpcs = kv._keepers[0], list(thread_starts)
        assert await asyncio.to_thread(keeper._ended.wait, 10)  # (a thread of asyncio's)
        for t in grpcs:
            t.join(10)
        assert grpcs and not [t.name for t in grpcs if t.is_alive()]
    finally:
        kv.close()


async def test_a_client_dropped_unclosed_ends_its_held_calls(
        thread_starts: list[threading.Thread]) -> None:
    """A client dropped without close() (a store an error path never closed) ends the calls it
    held open: their threads (and connections) went with it before it held any, and a held
    call's thread otherwise waited for ever, keeping the channel and its connection alive."""
    kv = GrpcKV(_endpoints()[:1], session_tls())
    await kv.call(0, "Range", pb.RangeRequest(key=b"grpc/none"), 10)
    del kv
    gc.collect()
    for t in thread_starts:
        t.join(10)
    assert thread_starts and not [t.name for t in thread_starts if t.is_alive()]
