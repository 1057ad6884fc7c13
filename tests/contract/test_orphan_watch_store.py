"""The orphan watch's records (storage/workers/orphan_watch.py) on each metadata backend:
saved and loaded again by a new holder (in several transactions), the count continued only
from a holder's own write, and a holder whose clock record another holder replaced saving
nothing and taking the store's watch instead. The saves' chunking is tried on an etcd left
at its default transaction limit (128 operations; the members Tessera starts take 1024)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ops.etcdcluster import ETCD_HOSTS, EtcdCluster, EtcdMember, default_members
from storage.errors import StorageError
from storage.keyspace import ORPHAN_WATCH, space
from storage.metadata import MetadataStore, Txn
from storage.metadata.etcd import EtcdStore
from storage.workers.orphan_watch import CLOCK_KEY, SAVE_OPS, OrphanWatch
from tests.contract.test_metadata_contract import store  # noqa: F401 - the fixture
from tests.integration.cluster import free_port


async def _empty(meta: MetadataStore) -> None:
    """Drop every watch record (on etcd, the session's cluster keeps earlier tests')."""
    keys = [it.key for it in await meta.range(*space(ORPHAN_WATCH), limit=100_000)]
    for i in range(0, len(keys), SAVE_OPS):
        await meta.txn(Txn(deletes=tuple(keys[i:i + SAVE_OPS])))
    await meta.delete(CLOCK_KEY)


def _watch(t: list[float], origin: float) -> OrphanWatch:
    return OrphanWatch(clock=lambda: origin + t[0])


async def test_a_new_holder_continues_the_stored_watch(store: MetadataStore) -> None:  # noqa: F811
    await _empty(store)
    t = [0.0]
    a = _watch(t, 5e6)
    await a.load(store)
    many = [f"{n:032x}.0" for n in range(2 * SAVE_OPS + 7)]
    for sid in many:
        a.watched_s("n1", sid)
    t[0] = 100.0
    await a.save(store)
    t[0] = 700.0  # a restarts: 600 s nobody watches
    b = _watch(t, -3e6)
    await b.load(store)
    assert len(b) == len(many) and b.watched_s("n1", many[-1]) == 100.0
    t[0] = 800.0
    await b.save(store)  # b counts from its load: 100 + 100
    c = _watch(t, 42.0)
    await c.load(store)
    assert c.watched_s("n1", many[0]) == 200.0
    for sid in many[1:]:
        c.forget("n1", sid)
    await c.save(store)
    left = await store.range(*space(ORPHAN_WATCH))
    assert len(left) == 1 and left[0].key.endswith(many[0].encode() + b"\x00")
    await _empty(store)


async def test_a_replaced_holder_saves_nothing_and_takes_the_stored_watch(
        store: MetadataStore) -> None:  # noqa: F811
    await _empty(store)
    t = [0.0]
    a, b = _watch(t, 1e6), _watch(t, 2e6)
    await a.load(store)
    a.watched_s("n1", "aa" * 16 + ".0")
    await a.save(store)
    await b.load(store)  # the lease moved to b while a still ran
    t[0] = 1000.0
    await b.save(store)
    a.watched_s("n1", "bb" * 16 + ".0")
    t[0] = 5000.0
    await a.save(store)  # refused: b wrote the clock since a read it
    assert len(await store.range(*space(ORPHAN_WATCH))) == 1, "a replaced holder saved"
    await a.load(store)  # a takes b's watch: b's 1000 s, none of its own since
    assert len(a) == 1 and a.watched_s("n1", "aa" * 16 + ".0") == 1000.0
    await _empty(store)


async def test_a_holder_whose_clock_record_was_replaced_takes_the_stored_watch(
        store: MetadataStore) -> None:  # noqa: F811
    """review21a: a saved (its token stored), then b took the lease, loaded a's watch and
    saved its own; a's next load must take b's watch, not continue its own clock with b's
    entries left in the store (b's clock lags a's: b's entries would count time nobody
    watched)."""
    await _empty(store)
    t = [0.0]
    a, b = _watch(t, 1e6), _watch(t, 2e6)
    await a.load(store)
    a.watched_s("n1", "aa" * 16 + ".0")
    await a.save(store)  # a's token is in the store
    t[0] = 1000.0
    await b.load(store)  # the lease moved to b 1000 s later (a paused): b counts from 0
    b.watched_s("n1", "bb" * 16 + ".0")  # first seen by b at 0 on its clock
    t[0] = 1100.0
    await b.save(store)
    await a.load(store)  # a got the lease back: it must take b's watch
    assert a.watched_s("n1", "bb" * 16 + ".0") == 100.0, "a counted time nobody watched"
    assert a.watched_s("n1", "aa" * 16 + ".0") == 100.0
    await _empty(store)


class DefaultOpsEtcd(EtcdCluster):
    """A member left at etcd's default --max-txn-ops (128), as an external etcd may be."""

    def _args(self, m: EtcdMember) -> list[str]:
        args = super()._args(m)
        at = args.index("--max-txn-ops")
        return args[:at] + args[at + 2:]


@pytest.mark.skipif(shutil.which("etcd") is None, reason="needs the etcd binary")
async def test_a_save_over_etcds_default_transaction_limit_goes_in_chunks(
        tmp_path: Path) -> None:
    """review21a F3: 300 entry puts, then 300 deletes, each save more operations than an etcd
    at its default limit takes in one transaction: saved whole, and loaded whole again."""
    host = ETCD_HOSTS[0]
    client, peer = free_port([host]), free_port([host])
    while peer == client:
        peer = free_port([host])
    cluster = DefaultOpsEtcd(tmp_path / "data", default_members(client, peer, (host,)),
                             tmp_path / "logs").start()
    try:
        meta = await EtcdStore.open(cluster.endpoints, cluster.client_tls)
        try:
            with pytest.raises(StorageError):  # (the limit is in force on this member)
                await meta.txn(Txn(puts={b"t/%04d" % i: b"" for i in range(3 * SAVE_OPS)}))
            t = [0.0]
            a = _watch(t, 1e6)
            await a.load(meta)
            many = [f"{n:032x}.0" for n in range(3 * SAVE_OPS)]
            for sid in many:
                a.watched_s("n1", sid)
            t[0] = 10.0
            await a.save(meta)
            b = _watch(t, 2e6)
            await b.load(meta)
            assert len(b) == len(many) and b.watched_s("n1", many[-1]) == 10.0
            for sid in many:
                b.forget("n1", sid)
            await b.save(meta)
            assert not await meta.range(*space(ORPHAN_WATCH)), "a delete chunk was lost"
        finally:
            await meta.close()
    finally:
        cluster.stop()
