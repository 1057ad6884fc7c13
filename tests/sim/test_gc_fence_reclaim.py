"""Settled fences of live stripes are reclaimed, and a reclaim never lets a commit through
that a claim since its token should have refused (review13b #2; proof in gcfence.py).

Every repair or move of a live stripe leaves its collector a fence key. The idle collector
now deletes fences with nothing pending whose last claim is RECLAIM_AFTER_S old. A fence
deleted and claimed again restarts at generation 1: a commit whose token saw the old fence
is refused by its epoch, one whose token saw none by its age. Simulated nodes.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from storage.keyspace import GC_FENCE, space
from storage.metadata import Txn
from storage.shards.ids import shard_id
from storage.workers import gcfence
from storage.workers.gc import GarbageCollector
from storage.workers.gcfence import MAX_TOKEN_AGE_S, RECLAIM_AFTER_S, claim, read_fence, settle
from storage.workers.manifests import Commit, commit_shard_moves
from storage.workers.rebalance import Rebalancer, _Move
from tests.sim.test_sim_repair import SEGMENT, Sim


def _later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The fences' wall clock, `seconds` on (the reclaimer's view of time passing)."""
    at = time.time_ns() + int(seconds * 1e9)
    monkeypatch.setattr(gcfence, "time", SimpleNamespace(time_ns=lambda: at,
                                                         monotonic=time.monotonic))


async def _fences(s: Sim) -> int:
    return len(await s.meta.range(*space(GC_FENCE), limit=1000))


async def _reclaim(s: Sim) -> None:
    gc = GarbageCollector(s.meta, s.stripes)
    await gc.step()  # idle: a page of fences


async def test_fences_of_moved_live_stripes_are_reclaimed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Sim(tmp_path, 301)
    await s.open(tmp_path)
    try:
        for i in range(3):
            await s.put(f"o{i}", 3 * SEGMENT + 11)
        rb = Rebalancer(s.cfg, s.meta, s.sim, s.health, s.pool)
        for man in await s.manifests():
            dst = next(n for n in s.cfg.nodes if n.id not in man.part.nodes)
            await rb._execute(_Move(man, {0: (str(man.part.nodes[0]), dst)}, balance=True), {})
        assert rb.stats.shards_moved == 3
        gc = GarbageCollector(s.meta, s.stripes)
        await gc.step()  # the replaced copies: claimed on live stripes, deleted, settled
        assert gc.deleted == 3 and await _fences(s) == 3
        man = (await s.manifests())[0]
        assert await claim(s.meta, man.part.stripe_id, "a-dead-collector", [None, "n1"], {})
        await _reclaim(s)
        assert await _fences(s) == 3  # too recent: kept
        _later(monkeypatch, RECLAIM_AFTER_S - 60)
        await _reclaim(s)
        assert await _fences(s) == 3
        _later(monkeypatch, RECLAIM_AFTER_S + 1)
        await _reclaim(s)
        assert await _fences(s) == 1  # the one still pending stays
        assert (await read_fence(s.meta, man.part.stripe_id)).pending
        assert await s.check_reads() == 3
    finally:
        await s.close()


@pytest.mark.parametrize("had_fence", [True, False], ids=["epoch", "age"])
async def test_a_commit_is_refused_across_a_reclaimed_fence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, had_fence: bool) -> None:
    s = Sim(tmp_path, 302)
    await s.open(tmp_path)
    try:
        await s.put("o", 3 * SEGMENT + 11)
        part = (await s.manifests())[0].part
        sid, nodes = part.stripe_id, list(part.nodes)
        dst = next(n.id for n in s.cfg.nodes if n.id not in nodes)

        async def claim_and_settle(owner: str) -> None:
            assert await claim(s.meta, sid, owner, [dst], {})
            await settle(s.meta, sid, owner, Txn(), indexed=True)

        if had_fence:
            await claim_and_settle("first")
        token = await read_fence(s.meta, sid)  # the writer reads, then writes its copy
        s.sim.files[dst][shard_id(sid, 0)] = bytearray(s.sim.files[nodes[0]][shard_id(sid, 0)])
        if not had_fence:
            await claim_and_settle("first")  # a collector claims that copy since
            token.read_at -= MAX_TOKEN_AGE_S + 1  # ... and the reclaim below, long after
        with monkeypatch.context() as mp:
            _later(mp, RECLAIM_AFTER_S + 1)
            await _reclaim(s)
        assert await _fences(s) == 0
        if had_fence:  # claimed again: generation 1, as the token's
            assert await claim(s.meta, sid, "second", [dst], {})
            assert (await read_fence(s.meta, sid)).gen == token.gen
        done, _ = await commit_shard_moves(s.meta, sid, nodes, {0: dst}, token)
        assert done is Commit.REFUSED
        await settle(s.meta, sid, "second", Txn(), indexed=True)
        fresh = await read_fence(s.meta, sid)
        done, _ = await commit_shard_moves(s.meta, sid, nodes, {0: dst}, fresh)
        assert done is Commit.DONE
        assert await s.check_reads() == 1
    finally:
        await s.close()
