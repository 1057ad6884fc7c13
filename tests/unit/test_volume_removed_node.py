"""A block volume's stripe placed on a node that is removed from the cluster map before the
stripe's commit (`storage/commit_nodes.py`): the commit is refused and the data written
again on the map as it is now, so the flush succeeds (a removal never fails an fsync) and no
committed record names the removed node. Both commit paths: a whole extent (its pointer)
and a journal segment. The real volume service over simulated nodes; the removal is made
right after the stripe write returns (before its commit), in this process's metadata only,
so the gateway's map is the old one, as on a gateway that has not refreshed yet."""

from __future__ import annotations

from typing import Any

from storage import membership as ms
from storage.volume_journal import segments
from storage.volume_overlay import JournaledVolume
from storage.volumes import VolumeService
from tests.unit.test_volume_journal import Sim, with_sim

MiB = 1 << 20


def _remove_a_target_once(sim: Sim) -> list[str]:
    """After the next stripe write, mark its first node removed (metadata only)."""
    stripes = sim.cluster.stripes
    write, removed = stripes.write, []

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        res = await write(*args, **kwargs)
        if not removed:
            removed.append(res.nodes[0])
            await ms.set_state(sim.meta, sim.cfg, res.nodes[0], ms.REMOVED)
        return res
    stripes.write = wrapped  # type: ignore[method-assign]
    return removed


def test_an_extent_placed_on_a_removed_node_is_written_again() -> None:
    async def body(sim: Sim, svc: VolumeService) -> None:
        await svc.create("t", "v", 2 * MiB)
        h = await svc.open("t", "v", holder="h1")
        removed = _remove_a_target_once(sim)
        data = bytes(range(256)) * (MiB // 256)
        await h.write(0, data)  # a whole extent: its own stripe and pointer
        assert removed and removed[0] not in h._own[0].nodes, (removed, h._own[0].nodes)
        assert await h.read(0, MiB) == data
        await h.close()
    with_sim(body)


def test_a_journal_segment_placed_on_a_removed_node_is_written_again() -> None:
    async def body(sim: Sim, svc: VolumeService) -> None:
        await svc.create("t", "v", 2 * MiB)
        h = await svc.open("t", "v", holder="h1")
        jv = JournaledVolume(h, max_dirty=MiB)
        removed = _remove_a_target_once(sim)
        await jv.write(4096, b"j" * 4096)
        await jv.flush()  # the barrier: a journal segment
        segs = await segments(h)
        assert removed and segs and all(removed[0] not in s.nodes for s in segs), \
            (removed, [s.nodes for s in segs])
        assert await jv.read(4096, 4096) == b"j" * 4096
        await jv.stop()
        await h.close()
    with_sim(body)
