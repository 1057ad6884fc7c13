"""A kept journal segment (VJK) must name the shard locations its stripe has at the moment
it is kept, not the ones its writer saw at append: repair or a drain may have moved a shard
of the live segment (VJ) in between, and the replaced copy is collected."""

from __future__ import annotations

from typing import Any

from storage.shards.ids import parse_shard_id
from storage.volume_overlay import JournaledVolume
from storage.volumes import VolumeService
from storage.workers.gc import GarbageCollector
from storage.workers.gcfence import read_fence
from storage.workers.manifests import commit_shard_moves, load_manifest
from tests.unit.test_volume_journal import Sim, with_sim
from tests.unit.test_volume_snapshot_held import detach, kept, new_writer

PAGE = 4096


async def snapshot_one_segment(svc: VolumeService) -> tuple[JournaledVolume, Any]:
    """Volume "v" with one page fsynced (one journal segment, not folded) and snapshot "s"
    taken: its writer and that live segment."""
    w = await new_writer(svc)
    await w.write(5 * PAGE, b"s" * PAGE)
    await w.flush()
    await w.snapshot("s")
    seg, _ = next(iter(w.live.values()))
    return w, seg


def test_a_kept_segment_keeps_a_shard_moved_before_the_fold() -> None:
    async def body(sim: Sim, svc: VolumeService) -> None:
        nodes = sim.cluster.nodes
        w, seg = await snapshot_one_segment(svc)
        old = list(seg.nodes)
        # repair (or a drain) moves shard 0 of the live segment to a spare node
        sid = next(s for s in nodes.files[old[0]] if parse_shard_id(s) == (seg.stripe, 0))
        spare = next(n for n in nodes.files if n not in old)
        nodes.files[spare][sid] = bytearray(nodes.files[old[0]][sid])
        fence = await read_fence(svc.meta, seg.stripe)
        ok, _ = await commit_shard_moves(svc.meta, seg.stripe, old, {0: spare}, fence)
        assert ok
        gc = GarbageCollector(svc.meta, sim.cluster.stripes)
        for _ in range(5):
            await gc.step()  # the replaced copy on the old node is collected
        assert sid not in nodes.files[old[0]]
        await w.checkpoint()  # the fold retires the segment: the snapshot keeps it
        held = await kept(svc, w.vol.vol.id)
        assert len(held) == 1
        man = await load_manifest(svc.meta, seg.stripe)
        assert list(man.part.nodes)[0] == spare, (  # type: ignore[union-attr]
            f"kept record names {list(man.part.nodes)}, shard 0 is on {spare} only")
        await detach(w)

    with_sim(body)


def test_a_snapshot_reads_after_its_kept_segment_is_repaired() -> None:
    """Two shards of a kept segment lost (nodes down): the repair sweep rebuilds them where
    the kept record points, the orphan sweep leaves them, and after two more shards go the
    snapshot still reads (k+m redundancy was restored for kept segments too). The two lost
    shards are in different zones: two nodes of one zone down leave that zone one node for
    its m shards, and repair rightly refuses to put a third shard in another zone."""
    from storage.config import RepairSettings
    from storage.keyspace import REPAIR, STRIPE, space
    from storage.shards.ids import shard_id
    from storage.workers.repair import RepairWorker

    async def body(sim: Sim, svc: VolumeService) -> None:
        nodes = sim.cluster.nodes
        w, seg = await snapshot_one_segment(svc)
        await w.write(5 * PAGE, b"x" * PAGE)
        await w.checkpoint()  # folded: the snapshot keeps the segment
        await detach(w)
        held = await kept(svc, w.vol.vol.id)
        assert [k["seq"] for k in held] == [seg.seq]
        zone = {n.id: n.zone for n in sim.cfg.nodes}
        gone = (0, next(i for i, n in enumerate(seg.nodes) if zone[n] != zone[seg.nodes[0]]))
        for i in gone:  # two nodes (of two zones) die with their shards
            nodes.wipe(seg.nodes[i])
            nodes.down.add(seg.nodes[i])
        await sim.cluster.health.probe_once()
        rep = RepairWorker(sim.cfg, svc.meta, nodes, sim.cluster.health, sim.pool,
                           RepairSettings(rate_bytes_s=0, down_grace_s=0,
                                          sweep_interval_s=0, orphan_grace_s=0))
        for _ in range(40):
            await rep.step()
            if not await svc.meta.range(*space(REPAIR), limit=1) and \
                    rep.stats.last_sweep_end and rep._sweep_cursor == space(STRIPE)[0]:
                break
        man = await load_manifest(svc.meta, seg.stripe)
        assert man is not None, "the kept segment's stripe has no index entry"
        p = man.part
        assert None not in p.nodes and not set(p.nodes) & {seg.nodes[i] for i in gone}, p.nodes
        for i, nid in enumerate(p.nodes):
            assert shard_id(p.stripe_id, i) in nodes.files[nid], (i, nid)
        for i in [i for i in range(len(p.nodes)) if i not in gone][:2]:  # two more go: still decodes
            nodes.lose(p.nodes[i], shard_id(p.stripe_id, i))
        ro = await svc.open("t", "v", holder="ro", snapshot="s")
        assert await ro.read(5 * PAGE, PAGE) == b"s" * PAGE

    with_sim(body)
