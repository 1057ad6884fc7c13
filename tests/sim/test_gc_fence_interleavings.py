"""Seeded interleavings of a repair retry and the collector on the same shard copy, with
crashes: no manifest ever names a copy the collector deleted, unless the stripe is queued for
repair (storage/workers/gcfence.py).

The setup is the one review12b #1 found: a repair commit gives up and queues its rebuilt copy
for collection; placement is deterministic per stripe, so the retry writes the very same
(index, node) and commits it. Here the retry and the collector run as actors whose steps the
scheduler interleaves at gates (the manifest check, the delete, every metadata transaction,
the shard write, the commit) and may kill at one (a process dying there; a fresh worker takes
over). The old code (check, delete, recheck) lost the copy whenever the commit landed after
the recheck, or the collector died between its delete and its recheck.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from storage.keyspace import GC, REPAIR, repair_key, space, urgent_repair_key
from storage.metadata import Txn
from storage.shards.ids import shard_id
from storage.workers import gc as gc_mod
from storage.workers import rebalance, repair, repair_orphans
from storage.workers.gc import GarbageCollector
from storage.workers.rebalance import Rebalancer, _Move
from storage.workers.repair import RepairWorker
from tests.sim.interleave import Scheduler
from tests.sim.test_repair_gc_named import SETTINGS, _give_up_first, _setup
from tests.sim.test_sim_repair import SEGMENT, Sim

SEEDS = 5


def _gated(s: Sim, sch: Scheduler, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gates at the points where the collector and a repair can interleave."""
    real_load, real_delete = gc_mod.load_manifest, s.stripes.delete
    real_txn, real_rebuild, real_commit = s.meta.txn, repair.rebuild_shards, \
        repair.commit_shard_moves
    real_copy, real_move_commit = rebalance.copy_shard, rebalance.commit_shard_moves
    assert rebalance.rebuild_shards is real_rebuild  # one gate serves both

    async def load(*a: Any) -> Any:
        man = await real_load(*a)
        await sch.gate("check")  # what it read may change before it acts on it
        return man

    async def delete(stripe_id: bytes, nodes: Sequence[str | None]) -> list[str]:
        await sch.gate("delete")
        failed = await real_delete(stripe_id, nodes)
        await sch.gate("deleted")
        return failed

    async def txn(t: Txn) -> bool:
        await sch.gate("txn")
        return await real_txn(t)

    async def rebuild(*a: Any, **kw: Any) -> Any:
        await sch.gate("write")
        return await real_rebuild(*a, **kw)

    async def commit(*a: Any, **kw: Any) -> Any:
        await sch.gate("commit")
        return await real_commit(*a, **kw)

    async def copy(*a: Any, **kw: Any) -> Any:
        await sch.gate("write")
        return await real_copy(*a, **kw)

    async def move_commit(*a: Any, **kw: Any) -> Any:
        await sch.gate("commit")
        return await real_move_commit(*a, **kw)

    real_orphan_load, real_stat, real_node_delete = repair_orphans.load_manifest, \
        s.sim.stat_shard, s.sim.delete_shard

    async def orphan_load(*a: Any) -> Any:
        man = await real_orphan_load(*a)
        await sch.gate("check")
        return man

    async def stat(*a: Any) -> Any:
        st = await real_stat(*a)
        await sch.gate("stat", only="sweep")  # (an assessment stats shards in parallel)
        return st

    async def node_delete(*a: Any) -> Any:
        await sch.gate("delete", only="sweep")
        return await real_node_delete(*a)

    monkeypatch.setattr(repair_orphans, "load_manifest", orphan_load)
    monkeypatch.setattr(s.sim, "stat_shard", stat)
    monkeypatch.setattr(s.sim, "delete_shard", node_delete)
    monkeypatch.setattr(gc_mod, "load_manifest", load)
    monkeypatch.setattr(s.stripes, "delete", delete)
    monkeypatch.setattr(s.meta, "txn", txn)
    monkeypatch.setattr(repair, "rebuild_shards", rebuild)
    monkeypatch.setattr(repair, "commit_shard_moves", commit)
    monkeypatch.setattr(rebalance, "copy_shard", copy)
    monkeypatch.setattr(rebalance, "rebuild_shards", rebuild)
    monkeypatch.setattr(rebalance, "commit_shard_moves", move_commit)


async def _short_and_unqueued(s: Sim) -> list[tuple[str, int, str]]:
    """Copies a manifest names that are gone from their (up) node while the stripe has no
    repair entry: a loss no one is going to heal."""
    out = []
    for m in await s.manifests():
        p = m.part
        if await s.meta.get(repair_key(p.stripe_id)) or \
                await s.meta.get(urgent_repair_key(p.stripe_id)):
            continue
        out += [(p.stripe_id.hex(), i, n) for i, n in enumerate(p.nodes)
                if n and n not in s.sim.down and shard_id(p.stripe_id, i) not in s.sim.files[n]]
    return out


async def _drain(s: Sim, rounds: int = 12) -> None:
    """The workers, ungated, until no repair entry and no due collection entry is left."""
    gc = GarbageCollector(s.meta, s.stripes)
    for _ in range(rounds):
        await gc.step()
        await s.repair.queue_step()
        if not await s.meta.range(*space(REPAIR), limit=1) and gc.watched_idle_s > 0:
            return
    raise AssertionError("the queues did not drain")


Actors = dict[str, Callable[[], Awaitable[None]]]


async def _repair_retry(s: Sim, mp: pytest.MonkeyPatch) -> tuple[Actors, str]:
    """A repair whose first commit gave up (its copy queued for collection): the retry."""
    _give_up_first(mp)
    await s.repair.queue_step()
    s.repair = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool, SETTINGS)
    w = s.repair

    async def mend() -> None:
        for _ in range(4):
            if not await s.meta.range(*space(REPAIR), limit=1):
                return
            await w.queue_step()
    return {"repair": mend}, ""


async def _move_retry(s: Sim, mp: pytest.MonkeyPatch) -> tuple[Actors, str]:
    """A rebalancer move of shard 0 whose first commit gave up (its copy queued for
    collection): the retry, to the same node."""
    rb = Rebalancer(s.cfg, s.meta, s.sim, s.health, s.pool)
    man = (await s.manifests())[0]
    dst = next(n for n in s.cfg.nodes if n.id not in man.part.nodes and n.id not in s.sim.down)
    job = _Move(man, {0: (str(man.part.nodes[0]), dst)}, balance=True)
    real = rebalance.commit_shard_moves

    async def give_up(meta: Any, stripe_id: bytes, old: list[str | None], *rest: Any) -> Any:
        return await real(meta, stripe_id, [*old, "changed"], *rest)

    mp.setattr(rebalance, "commit_shard_moves", give_up)
    await rb._execute(job, {})
    mp.setattr(rebalance, "commit_shard_moves", real)

    async def move() -> None:
        await rb._execute(job, {})
    return {"move": move}, dst.id


async def _move_over_stale(s: Sim, mp: pytest.MonkeyPatch) -> tuple[Actors, str]:
    """A move of shard 0 to a node that holds a stale copy of it, long past the orphan
    grace, and the repair worker's orphan sweep of that node."""
    rb = Rebalancer(s.cfg, s.meta, s.sim, s.health, s.pool)
    man = (await s.manifests())[0]
    dst = next(n for n in s.cfg.nodes if n.id not in man.part.nodes)
    sid = shard_id(man.part.stripe_id, 0)
    s.sim.files[dst.id][sid] = bytearray(s.sim.files[str(man.part.nodes[0])][sid])
    s.sim.mtime[(dst.id, sid)] = 0.0
    job = _Move(man, {0: (str(man.part.nodes[0]), dst)}, balance=True)
    w = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool, SETTINGS)

    async def move() -> None:
        await rb._execute(job, {})

    async def sweep() -> None:
        await w._orphans_on(dst, time.time())
    return {"move": move, "sweep": sweep}, dst.id


def _collector(s: Sim, sch: Scheduler) -> Callable[[str], None]:
    """Starts the collector actor, and a fresh one (a restarted process) when it dies."""
    def start(actor: str) -> None:
        if actor != "gc":
            return  # a writer that dies leaves its entry (or its move) undone
        gc = GarbageCollector(s.meta, s.stripes)

        async def collect() -> None:
            for _ in range(4):
                await gc.step()
                if gc.watched_idle_s > 0:  # nothing due
                    return
        sch.start(actor, collect)
    return start


@pytest.mark.parametrize("crash", [False, True], ids=["no-crash", "crash"])
@pytest.mark.parametrize("writer", ["repair", "move", "stale"])
async def test_no_interleaving_deletes_a_committed_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str, crash: bool) -> None:
    bad: list[str] = []
    for seed in range(SEEDS):
        rnd = random.Random(seed * 2 + crash)
        d = tmp_path / f"s{seed}"
        d.mkdir()
        with monkeypatch.context() as mp:
            if writer == "repair":  # a shard lost, or its node down, queued for repair
                s, _ = await _setup(d, 200 + seed, 1, down=rnd.random() < 0.5)
            else:  # a whole stripe, every shard in place
                s = Sim(d, 200 + seed)
                await s.open(d)
                await s.put("o", 3 * SEGMENT + 11)
            try:
                actors, dst = await {"repair": _repair_retry, "move": _move_retry,
                                "stale": _move_over_stale}[writer](s, mp)
                if writer != "stale":
                    assert await s.meta.range(*space(GC), limit=1)  # the given-up copy
                sch = Scheduler(rnd, crash_p=0.2 if crash else 0.0, crashes_left=2 * crash)
                _gated(s, sch, mp)

                start = _collector(s, sch)
                start("gc")
                for name, body in actors.items():
                    sch.start(name, body)
                await sch.run(on_crash=start)
                lost = await _short_and_unqueued(s)
                if lost:
                    bad.append(f"seed {seed}: {lost} after {sch.trace}")
                    continue
                mp.undo()
                await _drain(s)
                missing = [(i, n) for m in await s.manifests()
                           for i, n in enumerate(m.part.nodes) if n and n not in s.sim.down
                           and shard_id(m.part.stripe_id, i) not in s.sim.files[n]]
                assert missing == [], (seed, sch.trace)
                if "move" in actors:  # refused or not, once no delete is under way it lands
                    await actors["move"]()
                    assert (await s.manifests())[0].part.nodes[0] == dst, sch.trace
                assert await s.check_reads() == 1
            finally:
                await s.close()
    assert bad == [], "\n".join(bad)
