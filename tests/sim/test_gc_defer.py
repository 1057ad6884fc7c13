"""A GC entry whose claim keeps losing (its stripe's records rewritten under every claim, as
every repair commit rewrites a big multipart object's single version record) is requeued
`RETRY_S` later with its owner's pending mark, so the entries behind it run (review13b #4:
it stayed due at the queue's head, and a batch of them stopped the whole queue). Simulated
nodes, the real collector and metadata store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from storage.keyspace import GC, gc_key, space, stripe_index_key, stripe_of
from storage.keyspace import unpack as unpack_key
from storage.metadata import Txn
from storage.records import pack
from storage.shards.ids import shard_id
from storage.workers import gc as gc_mod
from storage.workers.gc import GarbageCollector
from storage.workers.gcfence import claim, copy_name, read_fence
from tests.sim.test_sim_repair import SEGMENT, Sim


async def test_an_entry_that_keeps_losing_its_claim_is_deferred_not_blocking(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc_mod, "BATCH", 4)
    s = Sim(tmp_path, 5)
    await s.open(tmp_path)
    try:
        await s.put("hot", 2 * SEGMENT)
        await s.put("cold", 2 * SEGMENT)
        by_key = {m.items[0].key: m for m in await s.manifests()}
        hot, cold = sorted(by_key.values(), key=lambda m: b"cold" in m.items[0].key)
        stray: dict[bytes, str] = {}
        for m in (hot, cold):  # a stray copy of shard 0 on a node the manifest does not name
            p = m.part
            stray[p.stripe_id] = next(n for n in s.sim.files if n not in p.nodes)
            s.sim.files[stray[p.stripe_id]][shard_id(p.stripe_id, 0)] = bytearray(b"x")
        hot_id, cold_id = hot.part.stripe_id, cold.part.stripe_id
        now = time.time_ns()
        hot_keys = [gc_key(now - 10**9 + i, hot_id) for i in range(gc_mod.BATCH)]
        for k in hot_keys:  # a whole batch due first, then one entry behind it
            nodes = [stray[hot_id]] + [None] * (len(hot.part.nodes) - 1)
            assert await s.meta.txn(Txn(puts={k: pack({"nodes": nodes})}))
        cold_key = gc_key(now - 10**6, cold_id)
        nodes = [stray[cold_id]] + [None] * (len(cold.part.nodes) - 1)
        assert await s.meta.txn(Txn(puts={cold_key: pack({"nodes": nodes})}))
        # an earlier run of the first hot entry claimed, then died: its mark must move along
        x = await s.meta.get(stripe_index_key(hot_id))
        assert x is not None
        mine = [stray[hot_id]] + [None] * (len(hot.part.nodes) - 1)
        assert await claim(s.meta, hot_id, hot_keys[0].hex(), mine, {x.key: x.revision})

        real_load = gc_mod.load_manifest

        async def busy(meta: Any, stripe_id: bytes) -> Any:
            """The hot stripe's version record is rewritten after every read of it."""
            man = await real_load(meta, stripe_id)
            if stripe_id == hot_id:
                rec = man.items[0]
                assert await s.meta.txn(Txn(puts={rec.key: rec.value}))
            return man

        monkeypatch.setattr(gc_mod, "load_manifest", busy)
        gc = GarbageCollector(s.meta, s.stripes)
        for _ in range(3):
            await gc.step()
        # the entry behind the batch ran (the old code read the same hot batch every step)
        assert await s.meta.get(cold_key) is None
        assert shard_id(cold_id, 0) not in s.sim.files[stray[cold_id]]
        assert gc.deferred == gc_mod.BATCH
        # the hot entries wait RETRY_S, none lost, none deleted a copy
        left = await s.meta.range(*space(GC), limit=100)
        assert len(left) == gc_mod.BATCH and all(stripe_of(i.key) == hot_id for i in left)
        assert all(int(unpack_key(i.key)[1]) > now + int(gc_mod.RETRY_S * 1e9) - 10**9
                   for i in left)
        assert shard_id(hot_id, 0) in s.sim.files[stray[hot_id]]
        fence = await read_fence(s.meta, hot_id)
        assert hot_keys[0].hex() not in fence.pending
        assert list(fence.pending.values()) == [[copy_name(0, stray[hot_id])]]
        assert next(iter(fence.pending)) in {i.key.hex() for i in left}
        assert await s.check_reads() == 2
    finally:
        await s.close()


@pytest.mark.parametrize(("marked", "together"), [(True, False), (True, True), (False, True)])
async def test_two_collectors_deferring_one_entry_requeue_it_once(
        tmp_path: Path, marked: bool, together: bool) -> None:
    """review14b: two collectors overlapping (a lease handover) that both read one entry and
    both defer it requeued it twice, under two keys (the queue grew). The requeue compares
    the entry: one of them does it, with the owner's pending mark carried once."""
    s = Sim(tmp_path, 5)
    await s.open(tmp_path)
    try:
        await s.put("hot", 2 * SEGMENT)
        (man,) = await s.manifests()
        sid = man.part.stripe_id
        stray = next(n for n in s.sim.files if n not in man.part.nodes)
        nodes = [stray] + [None] * (len(man.part.nodes) - 1)
        key = gc_key(time.time_ns() - 10**9, sid)
        assert await s.meta.txn(Txn(puts={key: pack({"nodes": nodes})}))
        if marked:  # an earlier run claimed, then died: its mark moves to the new entry
            x = await s.meta.get(stripe_index_key(sid))
            assert x is not None
            assert await claim(s.meta, sid, key.hex(), nodes, {x.key: x.revision})
        item = await s.meta.get(key)
        assert item is not None
        one, two = GarbageCollector(s.meta, s.stripes), GarbageCollector(s.meta, s.stripes)
        if together:
            await asyncio.gather(one._defer(item, sid, key.hex()),
                                 two._defer(item, sid, key.hex()))
        else:
            await one._defer(item, sid, key.hex())
            await two._defer(item, sid, key.hex())
        left = await s.meta.range(*space(GC), limit=100)
        assert len(left) == 1 and left[0].key != key and left[0].value == item.value
        assert one.deferred + two.deferred == 1
        fence = await read_fence(s.meta, sid)
        assert fence.pending == ({left[0].key.hex(): [copy_name(0, stray)]} if marked else {})
    finally:
        await s.close()
