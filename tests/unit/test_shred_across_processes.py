"""A shred made through one gateway process stops reads in every other one (storage/
tenants.py): each process has its own key caches, and every read names a KEK version,
which was once answered from a 60 s cache with no look at the record, then for SHORT_TTL_S."""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Any

import pytest

from storage import sharedreads as sharedreads_mod
from storage import tenants as tenants_mod
from storage.crypto.keys import FileRootKey
from storage.errors import KeyUnavailable, StorageError
from storage.metadata import Item
from storage.metadata.sqlite import SqliteStore
from storage.tenants import SHORT_TTL_S, TenantService


async def test_a_shred_elsewhere_is_obeyed_from_the_next_call(tmp_path: Path) -> None:
    """Two gateway worker processes (two stores on one SQLite file): once the shred through
    one returned, the other's next look refuses the tenant, with its KEK and state cached
    a moment before (they were trusted for SHORT_TTL_S: the shred's answer waited that
    long). The shred changes the auth change stamp, and the caches hold only with it."""
    path = str(tmp_path / "meta.db")
    a, b = await SqliteStore.open(path), await SqliteStore.open(path)
    try:
        root = FileRootKey(tmp_path / "root.key")
        here, there = TenantService(a, root), TenantService(b, root)
        await here.load()
        await there.load()
        await there.create("t")
        v, kek = await here.kek("t")
        assert await here.kek("t", v) == (v, kek) and await here.active("t")  # cached
        await there.shred("t")
        assert not await here.active("t")
        with pytest.raises(KeyUnavailable):
            await here.kek("t", v)
        assert not [k for k in here._kek_cache if k[0] == "t"]  # dropped from memory
        assert a.auth_stamp_exact  # so the shred's answer need not wait (`settled`)
    finally:
        await a.close()
        await b.close()


class LaggingStamp:
    """A store whose auth change stamp never moves (an etcd watch whose event is late),
    holding back the answer of a read until `gate` is set."""

    auth_stamp_exact = False

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self.read = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def auth_stamp(self) -> int:
        return 0

    async def get(self, key: bytes) -> Item | None:
        item = await self.inner.get(key)
        self.read.set()
        await self.gate.wait()
        return item


async def test_a_state_cached_from_a_joined_read_expires_counting_from_its_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`settled` waits SHORT_TTL_S after the shred where the stamp may lag. A caller that
    joined a read begun before the shred must not keep its answer past that: the cache
    counts from the read's start, not from when the late caller asked."""
    now = [1000.0]
    clock = types.SimpleNamespace(monotonic=lambda: now[0], time=lambda: now[0])
    monkeypatch.setattr(tenants_mod, "time", clock)
    monkeypatch.setattr(sharedreads_mod, "time", clock, raising=False)
    path = str(tmp_path / "meta.db")
    store = LaggingStamp(await SqliteStore.open(path))
    other = await SqliteStore.open(path)
    try:
        root = FileRootKey(tmp_path / "root.key")
        here = TenantService(store, root)  # type: ignore[arg-type]
        there = TenantService(other, root)
        await here.load()
        await there.load()
        await there.create("t")
        store.gate.clear()
        store.read.clear()  # (set by the reads of load/create: wait for early's own read)
        early = asyncio.create_task(here.active("t"))  # its read sees "active"...
        await store.read.wait()
        now[0] += 0.5
        await there.shred("t")  # lands while the read is in flight
        shredded_at = now[0]
        now[0] += 0.5
        late = asyncio.create_task(here.active("t"))  # ...joined by a later caller
        await asyncio.sleep(0)
        store.gate.set()
        assert await early and await late  # before the shred's answer: either answer
        now[0] = shredded_at + SHORT_TTL_S  # where `settled` answers "shredded"
        assert not await here.active("t")
    finally:
        await store.inner.close()
        await other.close()


async def test_a_read_in_flight_across_a_shred_does_not_cache_the_keys_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KEK lookup whose record read began before a shred in the same process and ended
    after it must not re-cache the key (nor mark the tenant checked for another 5 s)."""
    meta = await SqliteStore.open(tmp_path / "meta.db")
    try:
        svc = TenantService(meta, FileRootKey(tmp_path / "root.key"))  # type: ignore[arg-type]
        await svc.load()
        await svc.create("t")
        v, _ = await svc.kek("t")
        real_get = svc.get

        async def get_then_shred(name: str) -> Any:
            t = await real_get(name)  # read before the shred...
            await svc.shred(name)  # ...which lands before the lookup finishes
            return t

        monkeypatch.setattr(svc, "get", get_then_shred)
        svc._kek_checked.clear()  # its 5 s are over: the lookup reads the record
        await svc.kek("t", v)  # began before the shred: answered, not kept
        monkeypatch.setattr(svc, "get", real_get)
        assert not [k for k in svc._kek_cache if k[0] == "t"]
        with pytest.raises(KeyUnavailable):
            await svc.kek("t", v)
    finally:
        await meta.close()


class UnreadableStamp(LaggingStamp):
    """An etcd store whose stamp watch is down and which cannot be reached (an election)."""

    def __init__(self, inner: SqliteStore) -> None:
        super().__init__(inner)
        self.down = False

    async def auth_stamp(self) -> int:
        if self.down:
            raise StorageError("etcd unreachable")
        return 0


async def test_an_unreadable_stamp_leaves_the_caches_to_their_ttl(tmp_path: Path) -> None:
    """While the stamp cannot be read, the tenant state and KEK cached within SHORT_TTL_S
    still answer (a mounted volume's reads go on through a store blip, review15f): the
    stamp only shortens the TTL's bound, which `settled` waits on such a store."""
    store = UnreadableStamp(await SqliteStore.open(str(tmp_path / "meta.db")))
    try:
        svc = TenantService(store, FileRootKey(tmp_path / "root.key"))  # type: ignore[arg-type]
        await svc.load()
        await svc.create("t")
        v, kek = await svc.kek("t")
        assert await svc.kek("t", v) == (v, kek) and await svc.active("t")
        store.down = True
        assert await svc.kek("t", v) == (v, kek) and await svc.active("t")
    finally:
        await store.inner.close()
