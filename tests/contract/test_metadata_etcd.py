"""etcd-only parts of the metadata backend: gateway path, leases, watch, member failover.

The shared contract (get/put/delete/range/txn) runs against etcd in
test_metadata_contract.py, on the cluster that conftest.py starts.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from storage.errors import StorageError
from storage.metadata import Txn, open_store
from storage.metadata.etcd import EtcdError, EtcdStore, WatchEvent, api_prefix
from storage.metadata.etcdpb import etcd_wire_pb2 as pb
from tests.contract.conftest import session_tls, start_etcd
from tests.integration.cluster import free_port

pytestmark = pytest.mark.skipif(not os.environ.get("TESSERA_ETCD_ENDPOINTS"),
                                reason="no etcd cluster (etcd not installed)")
T = TypeVar("T")


def _endpoints() -> tuple[str, ...]:
    return tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(","))


@pytest.fixture
async def etcd() -> AsyncIterator[EtcdStore]:
    s = await EtcdStore.open(_endpoints(), session_tls())
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def ns() -> bytes:
    return b"et/" + secrets.token_hex(6).encode() + b"/"


async def _eventually(fn: Callable[[], Awaitable[T]], ok: Callable[[T], bool],
                      deadline_s: float = 60.0) -> T:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            got = await fn()
            if ok(got):
                return got
        except StorageError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {deadline_s}s (last: {got!r})")
        await asyncio.sleep(0.1)


def test_api_prefix_by_version() -> None:
    assert api_prefix("3.5.9") == "/v3"
    assert api_prefix("3.4.23") == "/v3"
    assert api_prefix("3.3.11") == "/v3beta"
    assert api_prefix("3.2.0") == "/v3alpha"


async def test_open_store_detects_gateway_path(tmp_path: Path) -> None:
    s = await open_store("etcd", str(tmp_path / "unused"), _endpoints(),
                         session_tls())
    try:
        assert isinstance(s, EtcdStore)
        assert s.server_version.startswith("3.")
        assert s._prefix == api_prefix(s.server_version)
    finally:
        await s.close()


async def test_no_endpoint_answers_is_one_clear_error() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EtcdError, match="no etcd endpoint answered"):
        await EtcdStore.open((dead,))


async def test_lease_exclusive_renew_release(etcd: EtcdStore, ns: bytes) -> None:
    name = ns.decode() + "gc"
    other = await EtcdStore.open(_endpoints(), session_tls())
    try:
        assert await etcd.acquire_lease(name, "gw-a", 10) is True
        assert await etcd.lease_holder(name) == "gw-a"
        assert await other.acquire_lease(name, "gw-b", 10) is False
        assert await etcd.acquire_lease(name, "gw-a", 10) is True  # re-acquire = renew
        assert await etcd.renew(name, "gw-a") is True
        assert await other.renew(name, "gw-b") is False
        assert await etcd.release(name, "gw-a") is True
        assert await etcd.lease_holder(name) is None
        assert await other.acquire_lease(name, "gw-b", 10) is True
        assert await etcd.acquire_lease(name, "gw-a", 10) is False
    finally:
        await other.close()
    assert await etcd.lease_holder(name) is None  # close released gw-b's lease


async def test_lease_expires_when_holder_stops_renewing(etcd: EtcdStore, ns: bytes) -> None:
    name = ns.decode() + "repair"
    dying = await EtcdStore.open(_endpoints(), session_tls())
    assert await dying.acquire_lease(name, "gw-dead", 2) is True
    assert await etcd.acquire_lease(name, "gw-live", 10) is False
    # the holder "dies": no renewals; the key goes with its etcd lease
    await _eventually(lambda: etcd.acquire_lease(name, "gw-live", 10), bool)
    assert await etcd.lease_holder(name) == "gw-live"
    assert await dying.renew(name, "gw-dead") is False
    await dying.close()
    assert await etcd.lease_holder(name) == "gw-live"


async def test_watch_prefix_sees_changes_in_order(etcd: EtcdStore, ns: bytes) -> None:
    start = await etcd.put(ns + b"before", b"0")
    events: list[WatchEvent] = []

    async def collect() -> None:
        async for batch in etcd.watch_prefix(ns, start_revision=start + 1):
            events.extend(batch)
            if len(events) >= 3:
                return

    task = asyncio.create_task(collect())
    r1 = await etcd.put(ns + b"a", b"1")
    await etcd.put(b"et/elsewhere", b"x")  # outside the prefix
    r2 = await etcd.txn(Txn(puts={ns + b"b": b"2"}, deletes=(ns + b"a",)))
    assert r2 is True
    await asyncio.wait_for(task, 60)  # bounds a hang, not a loaded box's etcd
    assert [(e.key, e.value, e.deleted) for e in events[:1]] == [(ns + b"a", b"1", False)]
    assert events[0].revision == r1
    assert sorted((e.key, e.deleted) for e in events[1:]) == [(ns + b"a", True),
                                                              (ns + b"b", False)]
    assert events[1].revision == events[2].revision > r1


async def test_poll_prefix_yields_on_change(etcd: EtcdStore, ns: bytes) -> None:
    it = etcd.poll_prefix(ns, interval_s=0.05)
    assert await anext(it) == []
    rev = await etcd.put(ns + b"x", b"1")
    items = await asyncio.wait_for(anext(it), 60)  # bounds a hang
    assert [(i.key, i.revision) for i in items] == [(ns + b"x", rev)]
    await it.aclose()


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")
async def test_member_loss_fails_over(tmp_path: Path) -> None:
    cluster = await asyncio.to_thread(start_etcd, tmp_path, "failover")
    try:
        store = await EtcdStore.open(cluster.endpoints, cluster.client_tls)
        try:
            rev = await store.put(b"f/k", b"v1")
            watched: list[WatchEvent] = []

            async def watch() -> None:
                async for batch in store.watch_prefix(b"f/", start_revision=rev + 1):
                    watched.extend(batch)

            watcher = asyncio.create_task(watch())
            await store.put(b"f/k", b"v2")
            await _eventually(lambda: asyncio.sleep(0, len(watched)), lambda n: n >= 1)
            in_use = cluster.members[cluster.endpoints.index(store.endpoint)].name
            cluster.kill(in_use)  # the endpoint in use (the leader)
            item = await _eventually(lambda: store.get(b"f/k"), lambda i: i is not None)
            assert item is not None and item.value == b"v2"
            new = await _eventually(lambda: store.txn(Txn({b"f/k": item.revision},
                                                          {b"f/k": b"v3"})), bool)
            assert new is True
            got = await store.range(b"f/", b"f0")
            assert [(i.key, i.value) for i in got] == [(b"f/k", b"v3")]
            # the watch resumed on another member without losing the change
            await _eventually(lambda: asyncio.sleep(0, [e.value for e in watched]),
                              lambda vs: vs == [b"v2", b"v3"])
            watcher.cancel()
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(cluster.stop)


async def _status(store: EtcdStore, endpoint: str) -> dict:
    """A member's /maintenance/status answer (its id, the leader's, the Raft term)."""
    async with store._session.post(f"{endpoint}{store._prefix}/maintenance/status",
                                   json={}) as r:
        return await r.json(content_type=None)


async def _leader(store: EtcdStore, endpoints: tuple[str, ...]) -> tuple[str, str]:
    """(the leader's endpoint, its member id), asked of every member."""
    for ep in endpoints:
        st = await _status(store, ep)
        if st["leader"] == st["header"]["member_id"]:
            return ep, st["leader"]
    raise AssertionError("no member says it leads")


async def test_requests_go_to_the_leader(etcd: EtcdStore, ns: bytes) -> None:
    """Listed with the leader last, the store still sends its requests to the leader (a
    follower would forward each of them), whichever member answers first."""
    leader, leader_id = await _leader(etcd, _endpoints())
    ordered = tuple(e for e in _endpoints() if e != leader) + (leader,)
    store = await EtcdStore.open(ordered, session_tls())
    try:
        assert store.endpoint == leader
        await store.put(ns + b"k", b"v")
        answer = await store._rpc("Range", pb.RangeRequest(key=ns + b"k"), idempotent=True)
        assert answer.header.member_id == int(leader_id)
    finally:
        await store.txn(Txn(deletes=(ns + b"k",)))
        await store.close()


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed")
async def test_store_follows_the_leader_after_an_election(tmp_path: Path) -> None:
    """Leadership moved to another member: the first answer from the new Raft term makes the
    store look the leader up again, and its requests go there from then on."""
    cluster = await asyncio.to_thread(start_etcd, tmp_path, "leader")
    try:
        store = await EtcdStore.open(cluster.endpoints, cluster.client_tls)
        try:
            old, _ = await _leader(store, cluster.endpoints)
            assert store.endpoint == old
            target = next(e for e in cluster.endpoints if e != old)
            target_id = (await _status(store, target))["header"]["member_id"]
            async with store._session.post(
                    f"{old}{store._prefix}/maintenance/transfer-leadership",
                    json={"targetID": target_id}) as r:
                assert r.status == 200, await r.text()
            # the move is done when the transfer call returns; the next request sees the term
            await _eventually(lambda: store.put(b"l/k", b"v"), lambda rev: rev > 0)
            await store.settled()  # the lookup runs beside the requests
            assert store.endpoint == target
            answer = await store._rpc("Range", pb.RangeRequest(key=b"l/k"), idempotent=True)
            assert answer.header.member_id == int(target_id)
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_scrub_drops_overwritten_values_from_history(etcd: EtcdStore, ns: bytes) -> None:
    """After a shred, an old wrapped key must not be readable from etcd's MVCC history."""
    key = ns + b"secret"
    old_rev = await etcd.put(key, b"wrapped-kek-v1")
    await etcd.put(key, b"nothing")
    old = await etcd._rpc("Range", pb.RangeRequest(key=key, revision=old_rev), idempotent=True)
    assert old.kvs[0].value == b"wrapped-kek-v1"
    await etcd.scrub()
    with pytest.raises(EtcdError, match="compacted"):
        await etcd._rpc("Range", pb.RangeRequest(key=key, revision=old_rev), idempotent=True)
    assert (await etcd.get(key)).value == b"nothing"  # type: ignore[union-attr]


async def test_a_new_term_is_not_looked_up_inside_the_request(etcd: EtcdStore, ns: bytes
                                                              ) -> None:
    """The request whose answer shows a newer Raft term answers at once; the leader is
    looked up beside it (here held back until the request is done)."""
    release = asyncio.Event()
    looked = []
    real = etcd._find_leader

    async def held_lookup() -> None:
        await release.wait()
        looked.append(True)
        await real()

    etcd._find_leader = held_lookup  # type: ignore[method-assign]
    etcd._term = 0  # as if an election happened since the last lookup
    try:
        await asyncio.wait_for(etcd.put(ns + b"t", b"v"), 60)  # old code: waits for lookup
        assert looked == [] and etcd._term > 0
        await asyncio.wait_for(etcd.get(ns + b"t"), 60)  # one lookup at a time, still held
    finally:
        release.set()
    await etcd.settled()
    assert looked == [True]
