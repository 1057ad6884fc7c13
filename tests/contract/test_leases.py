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
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.leases import Leases
from storage.metadata import MetadataStore, open_store
from tests.contract.test_metadata_contract import BACKENDS


@pytest.fixture(params=BACKENDS)
async def pair(request: pytest.FixtureRequest,
               tmp_path: Path) -> AsyncIterator[tuple[MetadataStore, MetadataStore]]:
    endpoints = tuple(e for e in os.environ.get("TESSERA_ETCD_ENDPOINTS", "").split(",") if e)
    path = str(tmp_path / "meta" / "t.db")
    a = await open_store(request.param, path, endpoints)
    b = a if request.param == "sqlite" else await open_store(request.param, path, endpoints)
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
