"""Garbage collection never deletes a shard copy a committed manifest names (review12b #1),
and a repair batch caps its commits in flight (review12b #2).

A repair commit that gives up queues its rebuilt copies for GC. Placement is deterministic
per stripe, so the retry writes the same shard to the same node and commits it: the GC entry
must not delete that copy. Simulated nodes, the real repair worker and collector.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from storage.keyspace import GC, REPAIR, repair_key, space, urgent_repair_key
from storage.metadata import MetadataStore, Txn
from storage.records import unpack
from storage.shards.ids import shard_id
from storage.workers import manifests, repair
from storage.workers.gc import GarbageCollector
from storage.workers.gcfence import Fence, read_fence
from storage.workers.manifests import Manifest, load_manifest
from storage.workers.repair import RepairSettings, RepairWorker
from tests.sim.test_sim_repair import SEGMENT, Sim

SETTINGS = RepairSettings(rate_bytes_s=0, down_grace_s=0, sweep_interval_s=3600,
                          orphan_grace_s=3600)


async def _setup(tmp_path: Path, seed: int, objects: int, down: bool,
                 settings: RepairSettings = SETTINGS) -> tuple[Sim, list[bytes]]:
    """Objects whose shard 0 is lost from an up node, or stripes with a shard on a node now
    down (the first stripe's shard 0 node), queued for urgent repair, whatever the placement;
    returns the stripes queued."""
    s = Sim(tmp_path, seed)
    await s.open(tmp_path)
    s.repair = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool, settings)
    for i in range(objects):
        await s.put(f"o{i}", 3 * SEGMENT + 11)
    mans = await s.manifests()
    gone = mans[0].part.nodes[0]
    if down:
        s.sim.down.add(gone)
        await s.health.probe_once()
        await s.health.probe_once()
    stripes = []
    for m in mans:
        p = m.part
        if down and gone not in p.nodes:
            continue
        if not down:
            assert s.sim.lose(p.nodes[0], shard_id(p.stripe_id, 0))
        await s.repair.enqueue(p.stripe_id, "test: shard 0 lost", urgent=True)
        stripes.append(p.stripe_id)
    return s, stripes


def _give_up_first(monkeypatch: pytest.MonkeyPatch, times: int = 1) -> list[bytes]:
    """The first `times` repair commits give up through the real path (the stripe's nodes
    'changed': the rebuilt copies are queued for GC)."""
    real = repair.commit_shard_moves
    given_up: list[bytes] = []

    async def commit(meta: MetadataStore, stripe_id: bytes, old: list[str | None],
                     written: dict[int, str], *fence: Fence) -> tuple[bool, int]:
        if len(given_up) < times:
            given_up.append(stripe_id)
            return await real(meta, stripe_id, [*old, "changed"], written, *fence)
        return await real(meta, stripe_id, old, written, *fence)

    monkeypatch.setattr(repair, "commit_shard_moves", commit)
    return given_up


async def _repair_all(s: Sim) -> None:
    for _ in range(10):
        if not await s.meta.range(*space(REPAIR), limit=1):
            return
        await s.repair.queue_step()
    raise AssertionError("the repair queue did not drain")


async def _named_missing(s: Sim) -> list[tuple[int, str]]:
    return [(i, n) for m in await s.manifests() for i, n in enumerate(m.part.nodes)
            if n and n not in s.sim.down and shard_id(m.part.stripe_id, i) not in s.sim.files[n]]


@pytest.mark.parametrize("down", [False, True], ids=["lost", "down"])
async def test_gc_keeps_the_copy_a_retried_commit_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, down: bool) -> None:
    s, stripes = await _setup(tmp_path, 71, 3, down)
    try:
        given_up = _give_up_first(monkeypatch, times=len(stripes))
        await _repair_all(s)
        # Every stripe gave up once; then it committed the retry's copy, or (the copy went
        # back to the node the manifest names) found the shard whole again.
        assert sorted(given_up) == sorted(stripes)
        queued = await s.meta.range(*space(GC), limit=1000)
        assert len(queued) >= len(stripes)  # the given-up copies wait for the collector
        assert await _named_missing(s) == []
        gc = GarbageCollector(s.meta, s.stripes)
        for _ in range(3):
            await gc.step()
        for left in await s.meta.range(*space(GC), limit=1000):  # the down node's, retried
            assert set(unpack(left.value)["nodes"]) <= s.sim.down | {None}
        assert await _named_missing(s) == []  # the old code deleted these committed copies
        assert gc.kept >= len(stripes)
        assert await s.check_reads() == 3
    finally:
        await s.close()


async def test_a_commit_between_the_check_and_the_delete_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry commits after the collector checked the manifest, before it deletes the
    copy: the commit is refused (the collector claimed that copy), the copy is deleted, and
    the next retry commits a fresh one. No manifest ever names a deleted copy (the old code
    committed it, deleted it, and could only queue a repair afterwards)."""
    s, stripes = await _setup(tmp_path, 72, 1, down=True)
    try:
        _give_up_first(monkeypatch)
        await s.repair.queue_step()  # gave up: the rebuilt copy is queued for GC
        assert s.repair.stats.stripes_repaired == 0
        assert await s.meta.range(*space(GC), limit=10)
        real_delete = s.stripes.delete

        async def delete(stripe_id: bytes, nodes: Sequence[str | None]) -> list[str]:
            await s.repair.queue_step()  # the retry rebuilds the very copy queued: refused
            assert s.repair.stats.stripes_repaired == 0
            return await real_delete(stripe_id, nodes)

        monkeypatch.setattr(s.stripes, "delete", delete)  # after the GC's check, before it
        gc = GarbageCollector(s.meta, s.stripes)
        await gc.step()
        assert await _named_missing(s) == []
        assert await s.meta.get(repair_key(stripes[0])) or \
            await s.meta.get(urgent_repair_key(stripes[0]))  # still queued
        await _repair_all(s)
        assert s.repair.stats.stripes_repaired == 1
        assert await _named_missing(s) == []
        assert await s.check_reads() == 1
    finally:
        await s.close()


async def test_a_batch_caps_its_commits_in_flight(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = RepairSettings(rate_bytes_s=0, down_grace_s=0, sweep_interval_s=3600,
                              orphan_grace_s=3600, parallel=2)
    s, stripes = await _setup(tmp_path, 73, 10, False, settings)
    try:
        real = s.repair._commit
        inflight = [0]
        most = [0]

        async def commit(stripe_id: bytes, old: list[str | None],
                         written: dict[int, str], fence: Fence) -> bool:
            inflight[0] += 1
            most[0] = max(most[0], inflight[0])
            try:
                await asyncio.sleep(0.05)  # a slow commit: rebuilds must not pile up behind it
                return await real(stripe_id, old, written, fence)
            finally:
                inflight[0] -= 1

        monkeypatch.setattr(s.repair, "_commit", commit)
        await _repair_all(s)
        assert s.repair.stats.stripes_repaired == len(stripes)
        assert most[0] <= 2
        assert await _named_missing(s) == []
    finally:
        await s.close()


async def test_a_commit_retries_while_other_stripes_of_its_record_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CAS conflicts from another part of the same record (its own nodes unchanged) do not
    make a commit give up: it retries with a short random pause, and commits."""
    s, stripes = await _setup(tmp_path, 74, 1, False)
    try:
        monkeypatch.setattr(manifests, "COMMIT_JITTER_S", 0.001, raising=False)
        monkeypatch.setattr(manifests, "COMMIT_JITTER_MAX_S", 0.001, raising=False)
        man = await load_manifest(s.meta, stripes[0])
        assert isinstance(man, Manifest)
        real_txn = s.meta.txn
        rivals = [0]

        async def txn(t: Txn) -> bool:
            if rivals[0] < 12 and t.compares:  # another stripe's commit lands first
                rivals[0] += 1
                for it in man.items:
                    await s.meta.put(it.key, (await s.meta.get(it.key) or it).value)
            return await real_txn(t)

        monkeypatch.setattr(s.meta, "txn", txn)
        nodes = list(man.part.nodes)
        fence = await read_fence(s.meta, stripes[0])
        ok, conflicts = await manifests.commit_shard_moves(s.meta, stripes[0], nodes,
                                                           {0: nodes[0]}, fence)
        assert (ok, conflicts) == (True, 12)  # the old code gave up after 8
        assert await s.meta.range(*space(GC), limit=10) == []
    finally:
        await s.close()
