"""Cache misses under load: concurrent requests whose tenant caches expired together read
each record once (storage/sharedreads.py), not once per request; a caller that goes away
does not cancel the read for the others, and a failed read is not kept."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from storage.crypto.keys import FileRootKey
from storage.keyspace import unpack
from storage.metadata import Item
from storage.metadata.sqlite import SqliteStore
from storage.sharedreads import SharedReads
from storage.tenants import TenantService


class CountingStore:
    """A real SQLite store, counting point reads by key space; `gate` holds them back."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner, self.gets = inner, Counter[str]()
        self.gate = asyncio.Event()
        self.gate.set()

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    async def get(self, key: bytes) -> Item | None:
        self.gets[unpack(key)[0]] += 1
        await self.gate.wait()
        return await self.inner.get(key)


async def test_concurrent_misses_read_each_record_once(tmp_path: Path) -> None:
    store = CountingStore(await SqliteStore.open(str(tmp_path / "meta.db")))
    try:
        tenants = TenantService(store, FileRootKey(tmp_path / "root.key"))  # type: ignore[arg-type]
        await tenants.load()
        await tenants.create("t1")
        cred = await tenants.create_key("t1")
        fresh = TenantService(store, FileRootKey(tmp_path / "root.key"))  # type: ignore[arg-type]
        await fresh.load()
        store.gets.clear()
        store.gate.clear()  # every request misses while the first reads are in flight

        async def request() -> tuple[object, ...]:
            c = await fresh.credential(cred.access_key)
            return (c, await fresh.identity("t1"), await fresh.public_access_block("t1"),
                    (await fresh.current_kek("t1"))[0])

        jobs = [asyncio.create_task(request()) for _ in range(32)]
        await asyncio.sleep(0)
        store.gate.set()
        answers = await asyncio.gather(*jobs)
        assert len(set(map(repr, answers))) == 1
        assert answers[0][0] is not None and answers[0][1] == ("t1", "t1")
        # one access key read; the tenant record read for identity + access block once and
        # for the KEK once (its own cache, longer-lived)
        assert store.gets == {"K": 1, "T": 2}
    finally:
        await store.inner.close()


async def test_a_gone_caller_does_not_cancel_the_read(tmp_path: Path) -> None:
    store = CountingStore(await SqliteStore.open(str(tmp_path / "meta.db")))
    try:
        await store.inner.put(b"K\x00x\x00", b"v")
        reads = SharedReads(store)  # type: ignore[arg-type]
        store.gate.clear()
        first = asyncio.create_task(reads.get(b"K\x00x\x00"))
        second = asyncio.create_task(reads.get(b"K\x00x\x00"))
        await asyncio.sleep(0)
        first.cancel()
        store.gate.set()
        item = await second
        assert item is not None and item.value == b"v"
        assert reads.reads == 1 and first.cancelled()
    finally:
        await store.inner.close()


async def test_a_failed_read_is_not_kept(tmp_path: Path) -> None:
    class Failing(CountingStore):
        fail = True

        async def get(self, key: bytes) -> Item | None:
            if self.fail:
                raise OSError("store down")
            return await super().get(key)

    store = Failing(await SqliteStore.open(str(tmp_path / "meta.db")))
    try:
        reads = SharedReads(store)  # type: ignore[arg-type]
        got = await asyncio.gather(reads.get(b"K\x00x\x00"), reads.get(b"K\x00x\x00"),
                                   return_exceptions=True)
        assert [type(g) for g in got] == [OSError, OSError] and reads.reads == 1
        store.fail = False
        assert await reads.get(b"K\x00x\x00") is None and reads.reads == 2
    finally:
        await store.inner.close()


async def test_a_change_made_here_is_not_hidden_by_a_read_in_flight(tmp_path: Path) -> None:
    """A key revoked (or tenant shredded) by this process while a read of it is in flight:
    a caller after the change must not join that older read and re-cache what it saw."""
    class ReadsThenWaits(CountingStore):
        seen = 0  # reads that have their value and wait at the gate

        async def get(self, key: bytes) -> Item | None:
            item = await self.inner.get(key)  # the value as of the read's start
            self.seen += 1
            await self.gate.wait()
            return item

    store = ReadsThenWaits(await SqliteStore.open(str(tmp_path / "meta.db")))
    try:
        key = b"K\x00x\x00"
        await store.inner.put(key, b"active")
        reads = SharedReads(store)  # type: ignore[arg-type]
        store.gate.clear()
        before = asyncio.create_task(reads.get(key))
        while not store.seen:  # until the read in flight has seen the old value
            await asyncio.sleep(0.01)
        await store.inner.put(key, b"revoked")
        reads.forget(key)
        after = asyncio.create_task(reads.get(key))
        await asyncio.sleep(0)
        store.gate.set()
        assert (await after).value == b"revoked"  # type: ignore[union-attr]
        assert (await before).value == b"active"  # type: ignore[union-attr]
        assert reads.reads == 2
    finally:
        await store.inner.close()


async def test_a_read_begun_before_a_revoke_is_not_cached_after_it(tmp_path: Path) -> None:
    """`credential()` reads an access key (still active) and is slow to return; the key is
    revoked through this process meanwhile: the stale answer must not be cached, or the
    revoked key keeps working here for the cache's 5 s."""
    class HoldFirst(CountingStore):
        held = 0

        async def get(self, key: bytes) -> Item | None:
            item = await self.inner.get(key)
            if self.held == 0 and unpack(key)[0] == "K":
                self.held = 1
                await self.gate.wait()
            return item

    store = HoldFirst(await SqliteStore.open(str(tmp_path / "meta.db")))
    try:
        tenants = TenantService(store, FileRootKey(tmp_path / "root.key"))  # type: ignore[arg-type]
        await tenants.load()
        await tenants.create("t1")
        cred = await tenants.create_key("t1")
        tenants._secret_cache.clear()
        store.gate.clear()
        slow = asyncio.create_task(tenants.credential(cred.access_key))
        while not store.held:
            await asyncio.sleep(0.01)
        await tenants.revoke_key(cred.access_key)
        store.gate.set()
        await slow
        assert await tenants.credential(cred.access_key) is None
    finally:
        await store.inner.close()


class HoldingStore(CountingStore):
    """Reads at once but hands the result back only once `gate` is set: a read that began
    (and saw the record) before a change made elsewhere, still in flight after it."""

    def __init__(self, inner: SqliteStore) -> None:
        super().__init__(inner)
        self.read = asyncio.Event()  # a read saw the record

    async def get(self, key: bytes) -> Item | None:
        item = await self.inner.get(key)
        self.read.set()
        await self.gate.wait()
        return item


async def test_a_revoke_elsewhere_is_not_hidden_by_a_read_in_flight(tmp_path: Path) -> None:
    """A key revoked through another process (its own store on the same file) while this
    one's read of the key is in flight: a request that arrives after the revoke returned
    does not join that read (it began under the old auth change stamp), and the stale
    answer is not cached for the next one."""
    path = str(tmp_path / "meta.db")
    store = HoldingStore(await SqliteStore.open(path))
    other = await SqliteStore.open(path)
    try:
        root = FileRootKey(tmp_path / "root.key")
        here = TenantService(store, root)  # type: ignore[arg-type]
        there = TenantService(other, root)
        await there.load()
        await here.load()
        await there.create("t1")
        cred = await there.create_key("t1")
        store.gate.clear()
        early = asyncio.create_task(here.credential(cred.access_key))  # reads "active"
        await store.read.wait()
        await there.revoke_key(cred.access_key)
        late = asyncio.create_task(here.credential(cred.access_key))
        await asyncio.sleep(0)
        store.gate.set()
        await early  # concurrent with the revoke: either answer (None or the key)
        assert await late is None
        assert await here.credential(cred.access_key) is None
    finally:
        await store.inner.close()
        await other.close()
