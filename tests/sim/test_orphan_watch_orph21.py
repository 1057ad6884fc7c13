"""The orphan watch kept in the metadata store (storage/workers/orphan_watch.py, orph21): a
repair lease holder that restarts more often than the grace still deletes an orphan once the
holders together have watched it for the grace; the time between holders (each a new
process), and any wall clock, never counts; a shard that got an owner is never deleted; the
store drops the records of removed nodes and vanished shards, and keeps those of a node that
is only down. Each holder is a new RepairWorker whose monotonic clock has its own origin (as
another process's would), injected, no sleeps."""

from __future__ import annotations

import os
from collections.abc import Callable

from storage import membership as ms
from storage.health import DOWN, OUT, UP
from storage.keyspace import ORPHAN_WATCH, space, stripe_index_key
from storage.keyspace import unpack as unpack_key
from storage.shards.ids import shard_id
from storage.workers.repair import RepairSettings, RepairWorker
from tests.sim.test_sim_repair import SEGMENT, sim_factory  # noqa: F401 - the fixture

GRACE_S = 3600.0


class Holders:
    """Repair lease holders in turn, one process after another, on one real timeline `t`."""

    def __init__(self, s) -> None:  # noqa: ANN001
        self.s, self.t, self.n = s, 0.0, 0
        self.repair: RepairWorker | None = None

    async def restart(self, gap_s: float = 600.0) -> None:
        """A new holder `gap_s` later (a restart or lease move), its clock's origin its own."""
        self.t += gap_s
        self.n += 1
        origin = 1e6 * self.n - self.t  # (monotonic clocks of two processes never compare)
        s = self.s
        self.repair = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool,
                                   RepairSettings(rate_bytes_s=0, down_grace_s=0,
                                                  sweep_interval_s=0, orphan_grace_s=GRACE_S))
        self.repair._orphan_watch.clock = self._clock(origin)  # noqa: SLF001
        await s.health.probe_once()
        await self.repair.sweep_step()  # a pass start: the volume stripes are known

    def _clock(self, origin: float) -> Callable[[], float]:
        return lambda: origin + self.t

    async def check(self, after_s: float = 0.0) -> None:
        self.t += after_s
        assert self.repair is not None
        await self.repair._collect_orphans()  # noqa: SLF001


async def _setup(sim_factory, seed: int):  # noqa: ANN001, ANN202, F811
    s = await sim_factory(seed)
    await s.put("x", SEGMENT)
    p = (await s.manifests())[0].part
    body = bytes(s.sim.files[p.nodes[0]][shard_id(p.stripe_id, 0)])
    node = sorted(set(s.sim.files) - set(p.nodes))[0]
    return s, p, body, node


def _plant(s, node: str, sid: str, body: bytes, age_s: float) -> None:  # noqa: ANN001
    s.sim.files[node][sid] = bytearray(body)
    s.sim.mtime[(node, sid)] = s.sim.now(node) - age_s


async def test_a_holder_restarting_within_the_grace_still_deletes_an_orphan(
        sim_factory) -> None:  # noqa: F811
    s, _, body, node = await _setup(sim_factory, 51)
    orphan = shard_id(os.urandom(16), 0)
    _plant(s, node, orphan, body, 2 * GRACE_S)  # an aborted write's, old on its node's clock
    h = Holders(s)
    for _ in range(3):  # each holder watches 1000 s, then restarts (well within the grace)
        await h.restart()
        await h.check()
        await h.check(1000.0)
        assert orphan in s.sim.files[node], "deleted before it was watched for the grace"
    await h.restart()
    await h.check()
    await h.check(500.0)  # 3500 s watched (the 600 s gaps between holders do not count)
    assert orphan in s.sim.files[node], "the time between holders counted as watching"
    await h.check(100.0)
    assert orphan not in s.sim.files[node], \
        "an orphan watched for the grace by holders that restart in it is never deleted"
    assert not await s.meta.range(*space(ORPHAN_WATCH)), "its watch record was kept"


async def test_a_stepped_wall_clock_never_deletes_across_restarts(sim_factory) -> None:  # noqa: F811
    s, _, body, node = await _setup(sim_factory, 52)
    in_flight = shard_id(os.urandom(16), 0)  # a write's first shard, not committed yet
    _plant(s, node, in_flight, body, 0.0)
    h = Holders(s)
    await h.restart()
    await h.check()
    s.sim.clock_offset = {node: 2 * 86400.0}  # the node's wall clock steps two days forward
    for _ in range(5):  # restarts, checks seconds apart: far less than the grace watched
        await h.restart(gap_s=2 * 86400.0)  # (a long gap between holders counts nothing)
        await h.check()
        await h.check(60.0)
    assert in_flight in s.sim.files[node], "a wall clock step (or the gaps) deleted a shard"
    await h.check(GRACE_S)
    assert in_flight not in s.sim.files[node], "an orphan watched for the grace was kept"


async def test_a_shard_that_gets_an_owner_between_checks_is_never_deleted(
        sim_factory) -> None:  # noqa: F811
    s, p, _, _ = await _setup(sim_factory, 53)
    named = shard_id(p.stripe_id, 0)
    holder = p.nodes[0]
    s.sim.mtime[(holder, named)] = s.sim.now(holder) - 2 * GRACE_S
    index = await s.meta.get(stripe_index_key(p.stripe_id))
    assert index is not None
    await s.meta.delete(index.key)  # a write in flight: its shards, no index entry yet
    h = Holders(s)
    await h.restart()
    await h.check()  # seen without an owner: watched, and the watch is stored
    assert await s.meta.range(*space(ORPHAN_WATCH))
    await s.meta.put(index.key, index.value)  # its commit
    for _ in range(3):
        await h.restart()
        await h.check()
        await h.check(GRACE_S)
    assert named in s.sim.files[holder], "a shard its commit names was deleted"
    assert not await s.meta.range(*space(ORPHAN_WATCH)), "a named shard stayed watched"


async def _watched_on(s, node: str) -> list[bytes]:  # noqa: ANN001
    """The stored `OW` keys of `node`'s shards."""
    return [it.key for it in await s.meta.range(*space(ORPHAN_WATCH))
            if unpack_key(it.key)[1] == node]


async def test_a_node_removed_from_the_map_leaves_no_watch_in_the_store(
        sim_factory) -> None:  # noqa: F811
    """review21a F2: `keep_nodes` deletes a removed node's records from the store too (not
    only from memory: while its token is its own, the holder never reloads them)."""
    s, _, body, node = await _setup(sim_factory, 54)
    orphan = shard_id(os.urandom(16), 0)
    _plant(s, node, orphan, body, 2 * GRACE_S)
    h = Holders(s)
    await h.restart()
    await h.check()
    assert await _watched_on(s, node)
    await ms.set_state(s.meta, s.cfg, node, ms.REMOVED)  # `tessera node remove`
    await ms.refresh(s.meta, s.cfg, s.health)
    await h.check(60.0)
    assert not await _watched_on(s, node), "a removed node's watch stayed in the store"


async def test_a_shard_gone_behind_the_sweep_leaves_no_watch_in_the_store(
        sim_factory) -> None:  # noqa: F811
    """review21a F2: a watched shard the next whole walk does not meet (`wrapped`) is
    deleted from the store too."""
    s, _, body, node = await _setup(sim_factory, 55)
    orphan = shard_id(os.urandom(16), 0)
    _plant(s, node, orphan, body, 2 * GRACE_S)
    h = Holders(s)
    await h.restart()
    await h.check()  # (one page: the walk wraps at each check)
    assert await _watched_on(s, node)
    del s.sim.files[node][orphan]  # gone behind the sweep (another collector, an operator)
    await h.check(60.0)
    assert not await _watched_on(s, node), "a vanished shard's watch stayed in the store"

async def test_a_node_down_for_a_while_keeps_its_watch(sim_factory) -> None:  # noqa: F811
    """review21a F5: a node that misses probes keeps its stored watch (before, each down
    check deleted every entry of the node, up to WATCH_MAX store deletes, and the walk put
    them back when it returned: a flapping node's orphans were never deleted). The time it
    was down counts (real time passed since first sight); it is checked once back."""
    s, _, body, node = await _setup(sim_factory, 56)
    orphan = shard_id(os.urandom(16), 0)
    _plant(s, node, orphan, body, 2 * GRACE_S)
    h = Holders(s)
    await h.restart()
    await h.check()  # first seen at watch clock 0
    stored = await _watched_on(s, node)
    assert stored
    s.sim.down.add(node)
    s.health.states[node].state = DOWN
    assert node not in {n.id for n in s.health.usable()}
    await h.check(1000.0)
    await h.check(2000.0)
    assert await _watched_on(s, node) == stored, "a node down for a check lost its watch"
    s.sim.down.discard(node)
    s.health.states[node].state = UP
    await h.check(500.0)  # 3500 s since first sight
    assert orphan in s.sim.files[node], "deleted before the grace"
    await h.check(100.0)
    assert orphan not in s.sim.files[node], "the time a node was down restarted its watch"
    assert not await s.meta.range(*space(ORPHAN_WATCH))


async def test_a_node_out_gives_up_its_watch(sim_factory) -> None:  # noqa: F811
    """A node down past the out timer (its stripes rebuilt elsewhere) gives up its watch, so
    a dead node that nobody removed never holds the cap (WATCH_MAX) against the live nodes'
    orphans (review20g F2)."""
    s, _, body, node = await _setup(sim_factory, 57)
    _plant(s, node, shard_id(os.urandom(16), 0), body, 2 * GRACE_S)
    h = Holders(s)
    await h.restart()
    await h.check()
    assert await _watched_on(s, node)
    s.sim.down.add(node)
    s.health.states[node].state = OUT
    await h.check(60.0)
    assert not await _watched_on(s, node), "a node out kept its watch"
