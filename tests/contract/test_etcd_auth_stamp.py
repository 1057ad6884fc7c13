"""The etcd store's auth change stamp (`storage/metadata/etcd_stamp.py`): every write of a
tenant or access-key record, by any client (put, delete, transaction), changes the stamp
another client reads, and no other write does; while that client's watch stands the stamp
costs no etcd read of it. Two real `EtcdStore`s (two gateways) on the contract session's real
3-member etcd; the only wait is for the watch to deliver (a condition, with a deadline)."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from storage.keyspace import access_key_key, system_key, tenant_key
from storage.metadata import Txn
from storage.metadata.etcd import EtcdStore
from tests.contract.conftest import session_tls

pytestmark = pytest.mark.skipif(not os.environ.get("TESSERA_ETCD_ENDPOINTS"),
                                reason="no etcd cluster (etcd not installed)")


@pytest.fixture
async def two() -> AsyncIterator[tuple[EtcdStore, EtcdStore]]:
    eps = tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(","))
    a, b = await EtcdStore.open(eps, session_tls()), await EtcdStore.open(eps, session_tls())
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _live(store: EtcdStore, deadline_s: float = 60.0) -> int:
    """The stamp, once `store`'s watch stands (its first call starts it)."""
    until = time.monotonic() + deadline_s
    stamp = await store.auth_stamp()
    while not store._stamp._live:  # noqa: SLF001 - the watch's state is what is tested
        assert time.monotonic() < until, "the auth change watch did not start"
        await asyncio.sleep(0.02)
        stamp = await store.auth_stamp()
    return stamp


async def _changes(reader: EtcdStore, before: int, write: Callable[[], Awaitable[object]],
                   deadline_s: float = 60.0) -> int:
    """The reader's stamp once it differs from `before` after `write` (the watch's delay)."""
    await write()
    until = time.monotonic() + deadline_s
    while (stamp := await reader.auth_stamp()) == before:
        assert time.monotonic() < until, "the change was not seen"
        await asyncio.sleep(0.02)
    return stamp


async def test_every_auth_write_changes_the_other_stores_stamp(
        two: tuple[EtcdStore, EtcdStore]) -> None:
    a, b = two
    ak, tenant = access_key_key("TK" + secrets.token_hex(9)), tenant_key(secrets.token_hex(6))
    stamp = await _live(b)
    stamp = await _changes(b, stamp, lambda: a.put(ak, b"record"))
    stamp = await _changes(b, stamp, lambda: a.txn(Txn(puts={tenant: b"t"})))
    stamp = await _changes(b, stamp, lambda: a.delete(ak))
    stamp = await _changes(b, stamp, lambda: a.txn(Txn(deletes=(tenant,))))
    assert await b.auth_stamp() == await b._read_stamp()  # noqa: SLF001 - what the watch holds


async def test_other_writes_leave_it_and_a_live_stamp_costs_no_request(
        two: tuple[EtcdStore, EtcdStore]) -> None:
    a, b = two
    stamp = await _live(b)
    other = system_key("stamp-test-" + secrets.token_hex(4))
    await a.put(other, b"x")
    await a.txn(Txn(puts={other: b"y"}))
    await a.delete(other)
    st = b._stamp  # noqa: SLF001
    reads, epoch, unconfirmed = st._fresh.reads, st._epoch, st.unconfirmed  # noqa: SLF001
    for _ in range(50):
        assert await b.auth_stamp() == stamp
    # no read of the stamp per request, unless the watch broke meanwhile (an election on a
    # loaded box) or its periodic check (`etcd_stamp.CHECK_S`) was late
    assert st._fresh.reads == reads or st._epoch != epoch or st.unconfirmed != unconfirmed  # noqa: SLF001
    assert await b._read_stamp() == stamp  # noqa: SLF001 - nothing changed it meanwhile


async def test_a_store_no_request_used_is_idle_not_unconfirmed(
        two: tuple[EtcdStore, EtcdStore]) -> None:
    """Review 16a: on a real etcd, a store before any request reads nothing and shows
    "idle" (the gauge of unconfirmed workers 0), then "confirmed" once its watch stands;
    it showed "not confirmed" before its first request."""
    _, b = two
    assert b.auth_stamp_state()["state"] == "idle"
    await _live(b)
    until = time.monotonic() + 60.0
    while b.auth_stamp_state()["state"] != "confirmed":  # the checks confirm it (a condition)
        assert time.monotonic() < until, b.auth_stamp_state()
        await b.auth_stamp()
        await asyncio.sleep(0.02)
