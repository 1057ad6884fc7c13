"""A running repair batch notices node changes: a return stops the rebuilds it made moot and
ends the step without them, a new failure (a node down, or past its down grace) starts the urgent work beside the rebuilds still
under way, and a scrubber's quarantine report is queued as urgent. Simulated nodes, the real
repair worker; a rebuild is held mid-write (an event) for as long as the test needs, so on
the old code (which noticed changes only between steps) these steps could not end."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from storage.health import DOWN
from storage.keyspace import REPAIR, space, stripe_of, urgent_repair_span
from storage.shards.ids import parse_shard_id, shard_id
from storage.workers.manifests import Manifest, load_manifest
from storage.workers.repair import RepairSettings, RepairWorker
from tests.sim.test_sim_repair import SEGMENT, Sim

SETTINGS = RepairSettings(rate_bytes_s=0, down_grace_s=0, sweep_interval_s=3600,
                          orphan_grace_s=3600, parallel=2)
DEADLINE_S = 120.0  # generous (a loaded machine): the new code ends these within a few WATCH_S


async def _sim(tmp_path: Path, seed: int, objects: int) -> tuple[Sim, list[Manifest]]:
    s = Sim(tmp_path, seed)
    await s.open(tmp_path)
    s.repair = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool, SETTINGS)
    for i in range(objects):
        await s.put(f"o{i}", 2 * SEGMENT + 3)
    await s.health.probe_once()  # every node's start time known (a restart is a change)
    await s.repair.step()  # the first sweep: nothing to repair, the next pass in an hour
    return s, await s.manifests()


def _hold_writes(s: Sim, stripe_id: bytes,
                 writes: list[str] | None = None) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold every shard write of `stripe_id` until `release` is set; `held` is set when the
    first one arrives. Each write's shard id is added to `writes`."""
    held, release = asyncio.Event(), asyncio.Event()
    put = s.sim.put_shard

    async def put_shard(node, sid, *args, **kwargs):  # noqa: ANN001, ANN202 - a stand-in
        if parse_shard_id(sid)[0] == stripe_id:
            if writes is not None:
                writes.append(sid)
            held.set()
            await release.wait()
        return await put(node, sid, *args, **kwargs)

    vars(s.sim)["put_shard"] = put_shard  # an instance attribute shadows the method
    return held, release


async def _until(cond, what: str) -> None:  # noqa: ANN001 - a predicate
    """Wait (polling, bounded by DEADLINE_S) until `cond()` holds."""
    end = time.monotonic() + DEADLINE_S
    while not await cond():
        assert time.monotonic() < end, f"not within {DEADLINE_S} s: {what}"
        await asyncio.sleep(0.02)


async def test_return_mid_batch_stops_the_moot_rebuild_and_ends_the_step(
        tmp_path: Path) -> None:
    s, (man,) = await _sim(tmp_path, 31, 1)
    try:
        part = man.part
        victim = part.nodes[0]
        s.sim.down.add(victim)
        s.health.states[victim].state = DOWN
        s.health.states[victim].since = time.monotonic() - 1  # past its grace (0 s): lost
        await s.repair.enqueue(part.stripe_id, "test: a read met the down node", urgent=True)
        held, release = _hold_writes(s, part.stripe_id)
        step = asyncio.create_task(s.repair.step())
        await asyncio.wait_for(held.wait(), DEADLINE_S)  # shard 0 is being rebuilt elsewhere
        s.sim.down.discard(victim)  # ...when its node comes back with it
        await s.health.probe_once()
        done, _ = await asyncio.wait({step}, timeout=DEADLINE_S)
        assert step in done, "the step waited for a rebuild its node's return made moot"
        step.result()
        assert s.repair.stats.shards_rebuilt == 0
        now = await load_manifest(s.meta, part.stripe_id)
        assert isinstance(now, Manifest) and now.part.nodes == part.nodes
        release.set()
        for _ in range(4):  # the entry stayed; assessed again, nothing is missing
            await s.repair.step()
        assert not await s.meta.range(*space(REPAIR), limit=1)
        assert s.repair.stats.shards_rebuilt == 0
        await s.check_redundant()
        assert await s.check_reads() == 1
    finally:
        await s.close()


async def test_restart_mid_batch_never_stops_the_rebuild_of_shards_found_gone(
        tmp_path: Path) -> None:
    """A node that restarts (or comes back) may have been wiped: shards found gone from it
    while it was up are rebuilt on, not stopped as moot and rebuilt again."""
    s, (man,) = await _sim(tmp_path, 34, 1)
    try:
        part = man.part
        victim = part.nodes[1]
        assert s.sim.lose(victim, shard_id(part.stripe_id, 1))  # gone from an up node
        await s.repair.enqueue(part.stripe_id, "test: shard 1 gone", urgent=True)
        writes: list[str] = []
        held, release = _hold_writes(s, part.stripe_id, writes)
        step = asyncio.create_task(s.repair.step())
        await asyncio.wait_for(held.wait(), DEADLINE_S)
        s.sim.started[victim] += 60.0  # its node restarts (seen by the next probe)
        n = s.health.states[victim]
        n.answered = n.probed = 0.0
        await s.health.probe_once()
        assert n.started == s.sim.started[victim]
        stamp = s.repair._plan

        async def replanned() -> bool:
            return s.repair._plan != stamp

        await _until(replanned, "the batch saw the restart")
        release.set()
        await asyncio.wait_for(step, DEADLINE_S)
        assert s.repair.stats.shards_rebuilt == 1
        assert writes == [shard_id(part.stripe_id, 1)]  # the rebuild ran on: not stopped
        # and started again
        await s.check_redundant()
    finally:
        await s.close()


@pytest.mark.parametrize("change", ["down", "past grace"])
async def test_new_failure_mid_batch_starts_urgent_work_beside_the_running_rebuild(
        tmp_path: Path, change: str) -> None:
    s, mans = await _sim(tmp_path, 32, 2)
    try:
        x, y = (m.part for m in mans)
        # a node outside y whose loss leaves x's rebuild to run: never the node of x's lost
        # shard (down within its grace, that shard would be unknown, not lost, and wait)
        spare = [n.id for n in s.cfg.nodes if n.id not in y.nodes and n.id != x.nodes[1]]
        other = next((n for n in spare if n not in x.nodes), spare[0])
        if change == "past grace":  # down before the step, within its grace (unknown)
            s.repair.settings = replace(SETTINGS, down_grace_s=3600)
            s.sim.down.add(other)
            s.health.states[other].state = DOWN
            s.health.states[other].since = time.monotonic()
        s.sim.lose(x.nodes[1], shard_id(x.stripe_id, 1))
        await s.repair.enqueue(x.stripe_id, "test: x lost shard 1", urgent=True)
        held, release = _hold_writes(s, x.stripe_id)
        step = asyncio.create_task(s.repair.step())
        await asyncio.wait_for(held.wait(), DEADLINE_S)  # x's rebuild is under way
        # Meanwhile y loses a shard (a read reports it) and a node goes down: the batch
        # re-plans and rebuilds y while x's rebuild still runs (one lane of two is free).
        s.sim.lose(y.nodes[2], shard_id(y.stripe_id, 2))
        await s.repair.enqueue(y.stripe_id, "test: y lost shard 2", urgent=True)
        if change == "past grace":  # its shards now count as lost
            s.health.states[other].since = time.monotonic() - 7200
        else:
            s.sim.down.add(other)
            s.health.states[other].state = DOWN

        async def y_repaired() -> bool:
            m = await load_manifest(s.meta, y.stripe_id)
            return isinstance(m, Manifest) and any(
                shard_id(y.stripe_id, 2) in s.sim.files[n] for n in m.part.nodes[2:3] if n)

        await _until(y_repaired, "y rebuilt while x's rebuild was held")
        assert not step.done()  # x's rebuild is still held: y did not wait for it
        release.set()
        await asyncio.wait_for(step, DEADLINE_S)
        s.sim.down.discard(other)
        await s.health.probe_once()
        for _ in range(6):
            await s.repair.step()
        await s.check_redundant()
        assert await s.check_reads() == 2
    finally:
        await s.close()


async def test_quarantine_report_is_queued_urgent(tmp_path: Path) -> None:
    s, (man,) = await _sim(tmp_path, 33, 1)
    try:
        part = man.part
        node = s.cfg.node(part.nodes[3])
        assert await s.sim.quarantine_shard(node, shard_id(part.stripe_id, 3), "scrub: bad")
        await s.repair._poll_quarantine()
        urgent = await s.meta.range(*urgent_repair_span(), limit=10)
        assert [stripe_of(it.key) for it in urgent] == [part.stripe_id]
        await s.repair.step()
        assert s.repair.stats.shards_rebuilt == 1
        await s.check_redundant()
    finally:
        await s.close()
