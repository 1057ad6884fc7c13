"""Worker leases (`storage/leases.py`) behave the same on every metadata backend.

On etcd two stores opened on the same cluster stand for two gateways. SQLite serves one
process (its revision counter lives in the process that opened it), so there both "gateways"
share one store: the lease logic is the same, only the sharing differs.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from storage.leases import Leases
from storage.metadata import MetadataStore, Txn, open_store
from storage.metadata.fence import FENCE, Fence, LeaseFenced
from tests.contract.conftest import session_tls
from tests.contract.test_metadata_contract import BACKENDS

T = TypeVar("T")


@pytest.fixture(params=BACKENDS)
async def pair(request: pytest.FixtureRequest,
               tmp_path: Path) -> AsyncIterator[tuple[MetadataStore, MetadataStore]]:
    endpoints = tuple(e for e in os.environ.get("TESSERA_ETCD_ENDPOINTS", "").split(",") if e)
    path = str(tmp_path / "meta" / "t.db")
    a = await open_store(request.param, path, endpoints, session_tls())
    b = a if request.param == "sqlite" else await open_store(request.param, path, endpoints, session_tls())
    try:
        yield a, b
    finally:
        await a.close()
        if b is not a:
            await b.close()


@pytest.fixture
def name() -> str:
    return "test-" + secrets.token_hex(6)


async def test_exclusive_renew_release_and_growing_token(
        pair: tuple[MetadataStore, MetadataStore], name: str) -> None:
    la, lb = Leases(pair[0]), Leases(pair[1])
    # a TTL no loaded machine's steps outlast (at 5 s, a stall could expire the lease
    # before the renewal below): expiry is test_expiry_hands_over's subject, not this one's
    a = await la.acquire(name, "host/a:1/10", 60)
    assert a is not None and a.valid()
    assert await lb.acquire(name, "host/b:1/20", 60) is None
    info = await lb.holder(name)
    assert info is not None and info.holder == "host/a:1/10" and info.token == a.token
    assert await la.renew(a) is True
    assert name in [x.name for x in await lb.list()]
    await la.release(a)
    assert name not in [x.name for x in await lb.list()]
    b = await lb.acquire(name, "host/b:1/20", 60)
    assert b is not None and b.token > a.token  # fencing: the next holder's token is larger
    assert await la.renew(a) is False


async def test_expiry_hands_over(pair: tuple[MetadataStore, MetadataStore], name: str) -> None:
    la, lb = Leases(pair[0]), Leases(pair[1])
    a = await la.acquire(name, "host/a:1/10", 1)
    assert a is not None
    # holder a stops renewing (its gateway died): b gets the lease once the TTL has passed
    deadline = time.monotonic() + 120  # bounds a hang; expiry takes ~1 s on an idle box
    while (b := await lb.acquire(name, "host/b:1/20", 1)) is None:
        assert time.monotonic() < deadline, "lease never expired"
        await asyncio.sleep(0.2)
    assert not a.valid()
    assert b.token > a.token
    assert await la.renew(a) is False


async def test_restarted_holder_succeeds_itself(pair: tuple[MetadataStore, MetadataStore],
                                                name: str) -> None:
    la, lb = Leases(pair[0]), Leases(pair[1])
    a = await la.acquire(name, "host/a:1/10", 30)
    assert a is not None
    # the same gateway (host and address) restarted with a new pid takes over at once ...
    again = await lb.acquire(name, "host/a:1/11", 30, succeeds="host/a:1/")
    assert again is not None and again.token > a.token
    # the predecessor, were it alive after all (a second host of the same name and address),
    # can no longer renew: on etcd dropping only the key left its keep-alive succeeding, so
    # it ran every worker beside its successor for as long as it lived
    assert await la.renew(a) is False
    # ... but another gateway does not
    assert await la.acquire(name, "host/c:1/12", 30, succeeds="host/c:1/") is None
    await lb.release(again)


async def _under(fence: Fence, call: Coroutine[Any, Any, T]) -> T:
    """Await `call` as a leased worker's step does: under `fence` (storage/metadata/fence.py),
    in a task of its own, as the runner's step loop and its sub-tasks are."""
    token = FENCE.set(fence)
    try:
        task = asyncio.create_task(call)  # copies the fence, as a step's sub-task does
    finally:
        FENCE.reset(token)
    return await task


async def test_a_stale_holders_step_commits_are_refused_by_the_store(
        pair: tuple[MetadataStore, MetadataStore], name: str) -> None:
    """The store-side fence: once another process holds the lease, every transaction of the
    old holder's step (sub-tasks included) is refused by the store, although the old holder
    still counts its lease valid (it has not heard); a keep-alive changes nothing compared."""
    (ma, mb), key = pair, f"fence-test/{name}".encode()
    la, lb = Leases(ma), Leases(mb)
    a = await la.acquire(name, "host/a:1/10", 30)
    assert a is not None and a.fence_key
    fa = Fence(a, a.fence_key, a.fence_revision)
    assert await la.renew(a) is True  # etcd: a keep-alive; SQLite: the record rewritten
    assert await _under(fa, ma.txn(Txn(compares={key: 0}, puts={key: b"a1"})))
    item = await ma.get(key)
    assert item is not None
    # a plain compare-and-swap lost under the fence is still a plain False, the caller's reads
    assert await _under(fa, ma.txn_or_read(Txn(compares={key: 0}, puts={key: b"x"}), (key,))) \
        == (False, {key: item})
    b = await lb.acquire(name, "host/a:1/11", 30, succeeds="host/a:1/")  # taken over at once
    assert b is not None and a.valid()  # a has not heard: its own clock still says valid
    with pytest.raises(LeaseFenced):
        await _under(fa, ma.txn(Txn(compares={key: item.revision}, puts={key: b"a2"})))
    with pytest.raises(LeaseFenced):
        await _under(fa, ma.txn_or_read(Txn(deletes=(key,)), (key,)))
    assert (await mb.get(key)) == item  # neither applied
    fb = Fence(b, b.fence_key, b.fence_revision)
    assert await _under(fb, mb.txn(Txn(compares={key: item.revision}, puts={key: b"b1"})))
    assert await ma.txn(Txn(puts={key: b"plain"}))  # not in a step: not fenced
    await lb.release(b)
    with pytest.raises(LeaseFenced):  # the lease ended: b's own step is refused too
        await _under(fb, mb.txn(Txn(puts={key: b"b2"})))
    await ma.txn(Txn(deletes=(key,)))
