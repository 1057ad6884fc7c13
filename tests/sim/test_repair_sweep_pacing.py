"""The repair sweep's pacing: while every node is up it checks at most `sweep_rate_stripes_s`
stripes a second on average (after a burst), so an idle cluster's sweep costs the same with
a million objects as with a thousand; while a node is down, and for the pass after a node
returns, it runs unpaced (risk-first: that is when stripes lose shards). Simulated nodes,
the real repair worker; the rate is set so low that a paced step could not come due during
the test, so nothing here waits on the clock."""

from __future__ import annotations

from pathlib import Path

from storage.health import DOWN, SUSPECT, UP
from storage.keyspace import STRIPE, space, stripe_of
from storage.shards.ids import shard_id
from storage.workers.manifests import Manifest, load_manifest
from storage.workers.repair import RepairSettings, RepairWorker
from tests.sim.test_sim_repair import SEGMENT, Sim

OBJECTS = 24
BATCH = 4


async def _sim(tmp_path: Path) -> tuple[Sim, RepairWorker, int]:
    s = Sim(tmp_path, 7)
    await s.open(tmp_path)
    for i in range(OBJECTS):
        await s.put(f"o{i}", SEGMENT + 7)
    await s.health.probe_once()
    assert all(st.state == UP for st in s.health.states.values())
    # burst = max(batch, rate x 60 s) = one batch; refilled at one stripe per 1,000 s
    worker = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool,
                          RepairSettings(rate_bytes_s=0, sweep_interval_s=3600,
                                         sweep_batch=BATCH, sweep_rate_stripes_s=0.001))
    stripes = len(await s.meta.range(*space(STRIPE), limit=10_000))
    assert stripes >= 3 * BATCH
    return s, worker, stripes


async def test_idle_sweep_is_paced(tmp_path: Path) -> None:
    s, worker, _ = await _sim(tmp_path)
    try:
        await worker.step()  # the burst: one batch, the budget is spent
        await worker.step()  # allowed (the budget was not overdrawn yet): now it is
        assert worker.stats.sweep_checked == 2 * BATCH
        for _ in range(5):  # the next step is ~1,000 s per stripe away: no sweep meanwhile
            await worker.step()
        assert worker.stats.sweep_checked == 2 * BATCH
        assert worker.stats.sweep_passes == 0
    finally:
        await s.close()


async def test_sweep_is_unpaced_while_a_node_is_down(tmp_path: Path) -> None:
    s, worker, stripes = await _sim(tmp_path)
    try:
        await worker.step()
        await worker.step()
        s.health.states["n5"].state = DOWN
        for _ in range(stripes // BATCH + 2):
            await worker.step()
        assert worker.stats.sweep_passes == 1  # the whole pass, without waiting
    finally:
        await s.close()


async def test_pass_after_a_return_is_unpaced(tmp_path: Path) -> None:
    s, worker, stripes = await _sim(tmp_path)
    try:
        await worker.step()
        await worker.step()
        for _ in range(3):
            await worker.step()
        assert worker.stats.sweep_checked == 2 * BATCH  # paced now
        worker._states["n5"] = DOWN  # the worker saw n5 down; it is up again
        for _ in range(2 * (stripes // BATCH + 2)):
            await worker.step()
        # the pass it was in and one whole pass more (what was checked before the return
        # is checked again), neither paced; then paced again
        assert worker.stats.sweep_passes == 2
        assert worker.stats.sweep_checked == 2 * stripes
        assert worker._unpaced is False
    finally:
        await s.close()


async def test_a_dead_node_removed_from_the_map_leaves_the_sweep_paced(tmp_path: Path) -> None:
    """A removed node is no longer probed: its last state (down) must go with it, or the
    sweep would run unpaced for good after every node retired this way (review9a)."""
    s, worker, stripes = await _sim(tmp_path)
    try:
        s.health.states["n5"].state = DOWN  # n5 died ...
        keep = [n for n in s.health.nodes if n.id != "n5"]
        s.health.set_nodes(keep, {n.id for n in keep})  # ... and was removed from the map
        assert "n5" not in s.health.states
        for _ in range(6 * (stripes // BATCH + 2)):
            await worker.step()
        assert worker.stats.sweep_checked <= 2 * BATCH  # paced: every mapped node is up
        assert worker.stats.sweep_passes == 0
    finally:
        await s.close()


async def test_quarantine_reports_are_read_while_the_sweep_is_paced(tmp_path: Path) -> None:
    """A scrubber's find is queued on its own short timer, not on the paced sweep's next
    step (which may be minutes away): review9a."""
    s, _, _ = await _sim(tmp_path)
    worker = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool,
                          RepairSettings(rate_bytes_s=0, sweep_interval_s=0,
                                         sweep_batch=BATCH, sweep_rate_stripes_s=0.001))
    try:
        await worker.step()
        await worker.step()
        checked = worker.stats.sweep_checked  # the burst is spent: paced from here
        node = s.health.nodes[0]
        sid = next(iter(s.sim.files[node.id]))
        assert await s.sim.quarantine_shard(node, sid, "bit rot")
        await worker.step()
        assert worker.stats.sweep_checked == checked  # no sweep step ran ...
        assert worker.stats.quarantine_reports == 1  # ... and the report was read
    finally:
        await s.close()


async def test_a_node_restarted_between_probes_gets_an_unpaced_pass(tmp_path: Path) -> None:
    """A node that restarts within a probe interval is never seen down, but what it holds
    may have changed (a disk swapped under it): its new start time unpaces one pass, as a
    return does (review9a)."""
    s, worker, stripes = await _sim(tmp_path)
    try:
        for _ in range(5):
            await worker.step()
        assert worker.stats.sweep_checked == 2 * BATCH  # paced now
        s.sim.started["n5"] += 60.0  # n5 restarted
        n5 = s.health.states["n5"]
        n5.answered = n5.probed = 0.0  # the next round probes it (its figures are stale)
        await s.health.probe_once()
        assert n5.started == s.sim.started["n5"]
        for _ in range(2 * (stripes // BATCH + 2)):
            await worker.step()
        assert worker.stats.sweep_passes >= 1
        assert worker.stats.sweep_checked >= stripes
    finally:
        await s.close()


async def test_a_restart_seen_while_the_node_is_suspect_still_unpaces_a_pass(
        tmp_path: Path) -> None:
    """The new start time is noticed in any state: recorded while suspect, it must not be
    taken as already seen once the node is up again (review9c)."""
    s, worker, stripes = await _sim(tmp_path)
    try:
        for _ in range(5):
            await worker.step()
        assert worker.stats.sweep_checked == 2 * BATCH  # paced now
        s.sim.started["n5"] += 60.0  # n5 restarted
        n5 = s.health.states["n5"]
        n5.answered = n5.probed = 0.0
        await s.health.probe_once()  # the probe sees the new start, up
        s.health.report_failure("n5", "ServerDisconnectedError: Server disconnected")
        assert n5.state == SUSPECT
        await worker.step()  # the repair worker sees the new start while n5 is suspect
        s.health.report_success("n5")
        assert n5.state == UP
        for _ in range(2 * (stripes // BATCH + 2)):
            await worker.step()
        assert worker.stats.sweep_checked >= stripes  # a whole pass, unpaced
    finally:
        await s.close()


async def test_a_shard_found_missing_on_an_up_node_unpaces_the_rest_of_the_pass(
        tmp_path: Path) -> None:
    """A shard gone from a node that is up (a file removed, a disk going bad) is a silent
    loss: more may be gone, so the rest of that pass runs unpaced instead of at
    `sweep_rate_stripes_s` (1M stripes: hours); the pass after it is paced again."""
    s, worker, stripes = await _sim(tmp_path)
    try:
        first = min(stripe_of(it.key) for it in await s.meta.range(*space(STRIPE), limit=1))
        man = await load_manifest(s.meta, first)
        assert isinstance(man, Manifest)
        assert s.sim.lose(man.part.nodes[0], shard_id(first, 0))  # in the first sweep batch
        for _ in range(stripes // BATCH + 2):
            await worker.step()
        assert worker.stats.sweep_passes == 1  # the whole pass, without waiting
        assert worker.stats.sweep_checked == stripes
        assert worker.stats.shards_rebuilt == 1
        assert worker._unpaced is False  # the next pass is paced
        await s.check_redundant()
    finally:
        await s.close()
