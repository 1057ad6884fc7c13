"""review18d (5): a commit that timed out and is applied by the store *after* the write was
discarded and its shards collected must fail, never list a version with no shards.

`ObjectService.put` discards a write whose commit raised: its stripe goes to the GC queue,
due now. On etcd a proposal whose answer was lost (a timeout, a broken connection) may still
be applied later (a member forwarding it late); the commit compared nothing about its stripe,
so it then made a listed version whose shards the collector had deleted (GetObject 503 for
good). Now the discard puts a tombstone (`XD`) the commit compares absent, and the collector
drops the tombstone once no such commit can apply (the orphan grace). Run on every backend
(SQLite always, etcd when the contract session has one)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage.keyspace import GC, discarded_key, object_key, part_key, space, stripe_of
from storage.metadata import MetadataStore, Txn
from storage.multipart_records import UploadOptions
from storage.objects import PutOptions
from storage.records import pack, unpack
from storage.testing.simnodes import SimNodes
from storage.workers.gc import GarbageCollector
from tests.contract.conftest import empty_gc_queue
from tests.contract.test_metadata_contract import store  # noqa: F401 - fixture
from tests.inproc import sim_config, wired_cluster

BODY = b"z" * 70000  # erasure-coded (inline is off), one stripe


@pytest.fixture(scope="session")
def keydir(etcd_root_dir: Path) -> Path:
    """The etcd session's one root key directory: an etcd store keeps the other tests'
    system key, which `TenantService.load` unwraps."""
    return etcd_root_dir


async def body() -> AsyncIterator[bytes]:
    yield BODY


async def discarded_write(store: MetadataStore, keydir: Path,  # noqa: F811
                          monkeypatch: pytest.MonkeyPatch, then: Any) -> None:
    """A PUT whose commit request is lost (not applied yet: held back), discarded; then
    `then(cluster, okey, late)` with `late()` applying the held-back commit. The queue
    starts empty: entries earlier modules left due in this worker's etcd would be collected
    by `then`'s pass too."""
    await empty_gc_queue(store)
    cfg = sim_config(keydir, 0)
    tenant, bucket = f"t{secrets.token_hex(4)}", f"b{secrets.token_hex(4)}"
    async with wired_cluster(keydir, cfg, SimNodes(list(cfg.nodes)), store,
                             tenant) as cluster:
        b = await cluster.buckets.create(tenant, bucket)
        okey = object_key(bucket, "k")
        real = store.txn_or_read
        held: list[tuple[Txn, tuple[bytes, ...]]] = []

        async def lost(txn: Txn, reads: tuple[bytes, ...]) -> Any:
            if okey in txn.puts and not held:
                held.append((txn, reads))  # in flight: applied (or not) later
                raise TimeoutError("the commit's answer never came")
            return await real(txn, reads)

        monkeypatch.setattr(store, "txn_or_read", lost)
        with pytest.raises(TimeoutError):
            await cluster.objects.put(b, "k", body(), PutOptions(size_hint=len(BODY)))
        monkeypatch.undo()

        async def late() -> bool:
            return (await real(*held[0]))[0]

        await then(cluster, okey, late)


async def test_a_commit_applied_after_its_discard_was_collected_fails(
        store: MetadataStore, keydir: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def then(cluster: Any, okey: bytes, late: Any) -> None:
        gc = GarbageCollector(store, cluster.stripes)
        await gc.step()  # the discard's entry is due now: every copy deleted
        assert gc.deleted == 1
        assert not await late()  # the late commit is refused...
        assert await store.get(okey) is None  # ...so no version lists deleted shards
    await discarded_write(store, keydir, monkeypatch, then)


async def test_a_discarded_writes_tombstone_is_collected_after_the_grace(
        store: MetadataStore, keydir: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def then(cluster: Any, okey: bytes, late: Any) -> None:
        mine = [i for i in await store.range(*space(GC), limit=10_000)
                if "discarded" in unpack(i.value) and any(unpack(i.value)["nodes"])]
        # (an etcd store keeps the other test's requeued entry: it names no copy)
        assert len(mine) == 1
        stripe = stripe_of(mine[0].key)
        assert await store.get(discarded_key(stripe)) is not None
        entry = unpack(mine[0].value)
        entry["discarded"] = 1  # the orphan grace has passed: no late commit can apply now
        await store.put(mine[0].key, pack(entry))
        gc = GarbageCollector(store, cluster.stripes)
        await gc.step()
        assert gc.deleted == 1
        assert await store.get(discarded_key(stripe)) is None
        assert [i for i in await store.range(*space(GC), limit=10_000)
                if stripe_of(i.key) == stripe] == []
    await discarded_write(store, keydir, monkeypatch, then)


async def test_an_upload_part_commit_applied_after_its_discard_fails(
        store: MetadataStore, keydir: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for UploadPart: a part record applied late would name deleted shards, and
    CompleteMultipartUpload would then make an object of them."""
    cfg = sim_config(keydir, 0)
    tenant, bucket = f"t{secrets.token_hex(4)}", f"b{secrets.token_hex(4)}"
    async with wired_cluster(keydir, cfg, SimNodes(list(cfg.nodes)), store,
                             tenant) as cluster:
        b = await cluster.buckets.create(tenant, bucket)
        up = await cluster.multipart.create(b, "k", UploadOptions())
        pkey = part_key(up.upload_id, 1)
        real = store.txn
        held: list[Txn] = []

        async def lost(txn: Txn) -> bool:
            if pkey in txn.puts and not held:
                held.append(txn)
                raise TimeoutError("the commit's answer never came")
            return await real(txn)

        monkeypatch.setattr(store, "txn", lost)
        with pytest.raises(TimeoutError):
            await cluster.multipart.upload_part(b, "k", up.upload_id, 1, body(), [],
                                                len(BODY))
        monkeypatch.undo()
        gc = GarbageCollector(store, cluster.stripes)
        await gc.step()  # the discard's entry is due now: every copy deleted
        assert gc.deleted == 1
        assert not await real(held[0])  # the late part commit is refused
        assert await store.get(pkey) is None
