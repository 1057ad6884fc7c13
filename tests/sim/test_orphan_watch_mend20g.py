"""The orphan watch (storage/workers/repair_orphans.py) after review20g: a shard watched for
the grace is re-checked by id at the next check, not a whole walk later (F1: a walk can take
longer than the grace, and a restart in between starts the watch again); shards of a node
removed or out (down past the out timer) give their places in the capped watch up (F2); a stale copy of a live stripe,
which goes through the collector's fence, takes no place in it."""

from __future__ import annotations

import os

from storage.health import OUT
from storage.shards.ids import shard_id
from storage.workers.repair import RepairSettings, RepairWorker
from storage.workers.repair_orphans import OrphanWatch
from tests.sim.test_sim_repair import SEGMENT, sim_factory  # noqa: F401 - the fixture

GRACE_S = 3600.0


async def _setup(s, limit: int = 100_000):  # noqa: ANN001, ANN202
    repair = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool,
                          RepairSettings(rate_bytes_s=0, down_grace_s=0, sweep_interval_s=0,
                                         orphan_grace_s=GRACE_S))
    await s.put("x", SEGMENT)
    p = (await s.manifests())[0].part
    body = bytes(s.sim.files[p.nodes[0]][shard_id(p.stripe_id, 0)])
    await s.health.probe_once()
    await repair.sweep_step()  # a pass start: the volume stripes are known
    watched = [0.0]
    repair._orphan_watch = OrphanWatch(clock=lambda: watched[0], limit=limit)
    return repair, p, body, watched


def _plant(s, node: str, sid: str, body: bytes) -> None:  # noqa: ANN001
    s.sim.files[node][sid] = bytearray(body)
    s.sim.mtime[(node, sid)] = s.sim.now(node) - 2 * GRACE_S  # old on its node's clock


async def test_a_watched_orphan_is_rechecked_by_id_before_its_walk_comes_round(
        sim_factory) -> None:  # noqa: F811
    s = await sim_factory(41)
    repair, p, body, watched = await _setup(s)
    node = sorted(set(s.sim.files) - set(p.nodes))[0]
    orphan = shard_id(b"\x00" * 16, 0)  # first on its node's first page
    _plant(s, node, orphan, body)
    for _ in range(250):  # more than a page: the walk takes two checks
        _plant(s, node, shard_id(os.urandom(16), 0), body)
    await repair._collect_orphans()  # noqa: SLF001 - first sight (page 1)
    assert orphan in s.sim.files[node]
    watched[0] = GRACE_S  # the next check, one grace later: the walk is on page 2
    await repair._collect_orphans()  # noqa: SLF001
    assert orphan not in s.sim.files[node], "a watched orphan waited for the walk to come round"
    assert repair.stats.orphans_watched == len(repair._orphan_watch)  # noqa: SLF001


async def test_a_node_no_longer_walked_gives_its_watch_places_up(sim_factory) -> None:  # noqa: F811
    s = await sim_factory(42)
    repair, p, body, watched = await _setup(s, limit=4)
    gone, live = sorted(set(s.sim.files) - set(p.nodes))[:2]
    for _ in range(4):
        _plant(s, gone, shard_id(os.urandom(16), 0), body)
    await repair._collect_orphans()  # noqa: SLF001 - fills the watch with `gone`'s shards
    s.sim.down.add(gone)
    s.health.states[gone].state = OUT  # (removed, or down past the out timer: its watch
    # goes; a node only down keeps it, mend21a, and holds the places until it is out)
    orphan = shard_id(os.urandom(16), 0)
    _plant(s, live, orphan, body)
    await repair._collect_orphans()  # noqa: SLF001
    watched[0] = GRACE_S
    await repair._collect_orphans()  # noqa: SLF001
    assert orphan not in s.sim.files[live], "the watch was held by a node not walked"
    assert repair.stats.orphan_watch_oldest_s == 0.0


async def test_a_stale_copy_takes_no_watch_place(sim_factory) -> None:  # noqa: F811
    s = await sim_factory(43)
    repair, p, body, watched = await _setup(s, limit=1)
    node = sorted(set(s.sim.files) - set(p.nodes))[0]
    stale = shard_id(p.stripe_id, 0)  # a live stripe names another node at index 0
    orphan = shard_id(b"\xff" * 16, 0)  # after the stale copy on the node's walk
    _plant(s, node, stale, body)
    _plant(s, node, orphan, body)
    await repair._collect_orphans()  # noqa: SLF001
    watched[0] = GRACE_S
    await repair._collect_orphans()  # noqa: SLF001
    assert orphan not in s.sim.files[node], "a stale copy held the watch's only place"


async def test_a_new_repair_holder_continues_the_orphan_walk(sim_factory) -> None:  # noqa: F811
    """The walk's position is published: a restarted (or new) lease holder goes on from it,
    so a node whose walk is longer than the holder's life still has every shard seen."""
    s = await sim_factory(44)
    repair, p, body, _ = await _setup(s)
    node = sorted(set(s.sim.files) - set(p.nodes))[0]
    for _ in range(250):  # two pages: 200, then the rest (the walk wraps)
        _plant(s, node, shard_id(os.urandom(16), 0), body)
    await repair._collect_orphans()  # noqa: SLF001 - page 1
    await repair._publish()  # noqa: SLF001
    again = RepairWorker(s.cfg, s.meta, s.sim, s.health, s.pool, repair.settings)
    await again._load_stats()  # noqa: SLF001 - as its first step does
    await again._collect_orphans()  # noqa: SLF001
    assert again._orphan_watch._walk.get(node) == 1, \
        "the new holder started the node's walk again at its first shard"  # noqa: SLF001
