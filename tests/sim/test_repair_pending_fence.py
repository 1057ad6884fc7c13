"""A copy pending deletion on the stripe's fence makes repair wait, not spin (review13b #1).

A collector that claimed a copy and has not settled (its delete under way, or the collector
died until another reruns its entry) makes every commit naming that copy refused. Repair
used to rebuild the stripe again and again, each time refused, ahead of the rest of the
queue: now it defers the entry a few seconds, before the rebuild when its token already
shows a target pending, and after a refused commit. And a delete reported failed (a request
that timed out) may still be running on the node: its copy stays pending, carried to the
collector's retry entry, until a delete of it is known finished (review13b #3). Simulated
nodes, the real workers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from storage.keyspace import GC, REPAIR, space, stripe_index_key, stripe_of, urgent_repair_key
from storage.metadata import Txn
from storage.records import pack, unpack
from storage.shards.ids import shard_id
from storage.workers import gc as gc_mod
from storage.workers import rebalance, repair
from storage.workers.gc import GarbageCollector
from storage.workers.gcfence import claim, read_fence, settle
from storage.workers.manifests import Manifest, load_manifest
from storage.workers.rebalance import Rebalancer, _Move
from storage.workers.repair import PENDING_RETRY_S, RepairWorker
from tests.sim.test_gc_fence_interleavings import _short_and_unqueued
from tests.sim.test_repair_gc_named import SETTINGS, _give_up_first, _named_missing, _setup
from tests.sim.test_sim_repair import SEGMENT, Sim


def _count_rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    real = repair.rebuild_shards
    n = [0]

    async def counting(*a: Any, **kw: Any) -> Any:
        n[0] += 1
        return await real(*a, **kw)

    monkeypatch.setattr(repair, "rebuild_shards", counting)
    return n


async def _deferred_for_pending(s: Sim, stripe_id: bytes) -> None:
    """The stripe's urgent entry waits about PENDING_RETRY_S; then make it due (time passes)."""
    item = await s.meta.get(urgent_repair_key(stripe_id))
    assert item is not None
    entry = unpack(item.value)
    assert time.time() < float(entry["retry_at"]) <= time.time() + PENDING_RETRY_S
    assert "pending" in entry["error"] or "claimed" in entry["error"]
    await s.meta.put(item.key, pack({**entry, "retry_at": 0}))


async def test_a_dead_collectors_claim_defers_repair_instead_of_rebuilding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, stripes = await _setup(tmp_path, 201, 1, down=True)
    try:
        _give_up_first(monkeypatch)
        await s.repair.queue_step()  # gave up: the rebuilt copy is queued for collection
        g = (await s.meta.range(*space(GC), limit=10))[0]
        sid = stripe_of(g.key)
        x = await s.meta.get(stripe_index_key(sid))
        man = await load_manifest(s.meta, sid)
        assert x is not None and isinstance(man, Manifest)
        compares = {x.key: x.revision, **{it.key: it.revision for it in man.items}}
        # the collector claims that copy, then dies before it deletes and settles
        assert await claim(s.meta, sid, g.key.hex(), list(unpack(g.value)["nodes"]), compares)
        s.repair = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool, SETTINGS)
        rebuilds = _count_rebuilds(monkeypatch)
        await s.repair.queue_step(); await s.repair.queue_step()  # noqa: E702
        assert rebuilds[0] == 0  # the old code rebuilt (and was refused) at every step
        assert s.repair.stats.stripes_repaired == 0
        await _deferred_for_pending(s, stripes[0])
        await GarbageCollector(s.meta, s.stripes).step()  # a collector reruns the entry
        await s.repair.queue_step()
        assert rebuilds[0] == 1 and s.repair.stats.stripes_repaired == 1
        assert await s.meta.range(*space(REPAIR), limit=1) == []
        assert await _named_missing(s) == []
        assert await s.check_reads() == 1
    finally:
        await s.close()


async def test_a_claim_after_the_token_defers_the_refused_repair(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, stripes = await _setup(tmp_path, 202, 1, down=True)  # the copy goes to another node
    try:
        real = repair.rebuild_shards
        rebuilds = [0]

        async def claimed_meanwhile(*a: Any, **kw: Any) -> Any:
            rebuilds[0] += 1
            res = await real(*a, **kw)
            if rebuilds[0] == 1:  # a collector claims the written copy before the commit
                nodes: list[str | None] = [None] * (max(res.written) + 1)
                for i, n in res.written.items():
                    nodes[i] = n
                assert await claim(s.meta, stripes[0], "gc-test", nodes, {})
            return res

        monkeypatch.setattr(repair, "rebuild_shards", claimed_meanwhile)
        await s.repair.queue_step(); await s.repair.queue_step()  # noqa: E702
        assert rebuilds[0] == 1  # refused once, then deferred (the old code: due at once)
        assert s.repair.stats.stripes_repaired == 0
        await _deferred_for_pending(s, stripes[0])
        await s.repair.queue_step()
        assert rebuilds[0] == 1  # still pending: deferred again before any rebuild
        await _deferred_for_pending(s, stripes[0])
        await settle(s.meta, stripes[0], "gc-test", Txn(), indexed=True)  # its delete failed
        await s.repair.queue_step()
        assert rebuilds[0] == 2 and s.repair.stats.stripes_repaired == 1
        assert await _named_missing(s) == []
        assert await s.check_reads() == 1
    finally:
        await s.close()


async def test_the_rebalancer_counts_refused_moves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Sim(tmp_path, 203)
    await s.open(tmp_path)
    try:
        await s.put("o", 3 * SEGMENT + 11)
        rb = Rebalancer(s.cfg, s.meta, s.sim, s.health, s.pool)
        man = (await s.manifests())[0]
        dst = next(n for n in s.cfg.nodes if n.id not in man.part.nodes)
        real = rebalance.copy_shard

        async def copy(*a: Any, **kw: Any) -> Any:
            out = await real(*a, **kw)
            assert await claim(s.meta, man.part.stripe_id, "gc-test", [dst.id], {})
            return out

        monkeypatch.setattr(rebalance, "copy_shard", copy)
        await rb._execute(_Move(man, {0: (str(man.part.nodes[0]), dst)}, balance=True), {})
        assert (rb.stats.refused, rb.stats.shards_moved) == (1, 0)
        assert (await s.manifests())[0].part.nodes == man.part.nodes
    finally:
        await s.close()


async def test_a_delete_that_timed_out_keeps_its_copy_pending(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, stripes = await _setup(tmp_path, 204, 1, down=True)
    try:
        _give_up_first(monkeypatch)
        await s.repair.queue_step()  # gave up: the rebuilt copy is queued for collection
        g = (await s.meta.range(*space(GC), limit=10))[0]
        sid = stripe_of(g.key)
        copies = [(i, str(n)) for i, n in enumerate(unpack(g.value)["nodes"]) if n]
        real_delete = s.stripes.delete

        async def timed_out(stripe_id: bytes, nodes: Sequence[str | None]) -> list[str]:
            return [n for n in nodes if n]  # reported failed; the node goes on unlinking

        monkeypatch.setattr(s.stripes, "delete", timed_out)
        await GarbageCollector(s.meta, s.stripes).step()
        retry = (await s.meta.range(*space(GC), limit=10))[0]
        assert retry.key != g.key
        fence = await read_fence(s.meta, sid)
        assert fence.pending == {retry.key.hex(): [f"{i}/{n}" for i, n in copies]}
        await s.repair.queue_step()  # the old code committed the very copy being deleted
        assert s.repair.stats.stripes_repaired == 0
        for i, n in copies:  # the node's unlink lands
            s.sim.files[n].pop(shard_id(sid, i), None)
        assert await _short_and_unqueued(s) == []
        monkeypatch.setattr(s.stripes, "delete", real_delete)
        later = time.time_ns() + 60 * 10**9  # the retry entry falls due
        monkeypatch.setattr(gc_mod, "time", SimpleNamespace(time_ns=lambda: later))
        await GarbageCollector(s.meta, s.stripes).step()
        assert await s.meta.range(*space(GC), limit=10) == []
        assert (await read_fence(s.meta, sid)).pending == {}
        await _deferred_for_pending(s, stripes[0])
        await s.repair.queue_step()
        assert s.repair.stats.stripes_repaired == 1
        assert await _named_missing(s) == []
        assert await s.check_reads() == 1
    finally:
        await s.close()
