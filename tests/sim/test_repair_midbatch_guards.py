"""What a re-plan mid-batch must not do (review of the mid-batch re-plan): a metadata error
while re-planning does not throw away the rebuilds under way; a node seen out (down past its
out time) does not stop a rebuild by coming back, since a stat cannot vouch for its frames;
and a flapping node stops a stripe's rebuild once, not at every return. Simulated nodes, the
real repair worker, rebuilds held mid-write (tests/sim/test_repair_midbatch.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from storage.errors import StorageError
from storage.health import DOWN, OUT
from storage.shards.ids import shard_id
from tests.sim.test_repair_midbatch import DEADLINE_S, _hold_writes, _sim, _until


async def test_a_metadata_error_while_re_planning_keeps_the_rebuilds(tmp_path: Path) -> None:
    s, (x, _) = await _sim(tmp_path, 41, 2)
    try:
        part = x.part
        s.sim.lose(part.nodes[1], shard_id(part.stripe_id, 1))
        await s.repair.enqueue(part.stripe_id, "test: shard 1 lost", urgent=True)
        held, release = _hold_writes(s, part.stripe_id)
        step = asyncio.create_task(s.repair.step())
        await asyncio.wait_for(held.wait(), DEADLINE_S)
        real_range, failed = s.meta.range, []

        async def flaky(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - a stand-in
            if not failed:  # one etcd hiccup: the re-plan's next metadata range
                failed.append(True)
                raise StorageError("etcd: leader changed")
            return await real_range(*args, **kwargs)

        vars(s.meta)["range"] = flaky  # an instance attribute shadows the method
        other = next(n.id for n in s.cfg.nodes if n.id not in part.nodes)
        s.sim.down.add(other)  # a node change: the batch re-plans
        s.health.states[other].state = DOWN

        async def hiccup_met() -> bool:
            return bool(failed) or step.done()

        await _until(hiccup_met, "the re-plan read metadata")
        assert not step.done(), "the step ended (failed) on one metadata error"
        release.set()
        await asyncio.wait_for(step, DEADLINE_S)
        assert s.repair.stats.shards_rebuilt == 1
    finally:
        await s.close()


async def _rebuild_meets_a_return(s, part, victim: str,  # noqa: ANN001
                                  releases: list[asyncio.Event]) -> asyncio.Task:
    """Start a step rebuilding `victim`'s shard 0, return the node once the write is held,
    and wait until the batch has re-planned on it; the step (still running or not). The
    held write's release goes to `releases`."""
    held, release = _hold_writes(s, part.stripe_id)
    releases.append(release)
    step = asyncio.create_task(s.repair.step())
    await asyncio.wait_for(held.wait(), DEADLINE_S)
    stamp = s.repair._plan
    s.sim.down.discard(victim)
    await s.health.probe_once()

    async def replanned() -> bool:
        return s.repair._plan != stamp or step.done()

    await _until(replanned, "the batch saw the return")
    return step


def _release(releases: list[asyncio.Event]) -> None:
    for release in releases:
        release.set()


async def _lose_first_node(s, part, state: str, what: str) -> str:  # noqa: ANN001
    """`part`'s first node down in `state` since a second ago (past a 0 s grace), and its
    stripe queued urgent; the node's id."""
    victim = part.nodes[0]
    s.sim.down.add(victim)
    s.health.states[victim].state = state
    s.health.states[victim].since = time.monotonic() - 1
    await s.repair.enqueue(part.stripe_id, f"test: its node is {what}", urgent=True)
    return victim


async def test_a_node_seen_out_stops_no_rebuild_by_coming_back(tmp_path: Path) -> None:
    s, (man, _) = await _sim(tmp_path, 43, 2)
    releases: list[asyncio.Event] = []
    try:
        part = man.part
        victim = await _lose_first_node(s, part, OUT, "out")  # down past its out time
        step = await _rebuild_meets_a_return(s, part, victim, releases)
        _release(releases)
        await asyncio.wait_for(step, DEADLINE_S)
        assert s.repair.stats.shards_rebuilt == 1  # rebuilt on: not stopped as moot
    finally:
        _release(releases)
        await s.close()


async def test_a_flapping_node_stops_a_stripes_rebuild_once(tmp_path: Path) -> None:
    s, (man, _) = await _sim(tmp_path, 44, 2)
    releases: list[asyncio.Event] = []
    try:
        part = man.part
        for round_ in range(2):
            victim = await _lose_first_node(s, part, DOWN, "down")  # past its grace (0 s) ...
            step = await _rebuild_meets_a_return(s, part, victim, releases)  # back mid-rebuild
            if round_ == 0:  # the first return stops the rebuild: the step ends without it
                await asyncio.wait_for(step, DEADLINE_S)
                assert s.repair.stats.shards_rebuilt == 0
        _release(releases)
        await asyncio.wait_for(step, DEADLINE_S)
        assert s.repair.stats.shards_rebuilt == 1  # the second return let it finish
    finally:
        _release(releases)
        await s.close()
