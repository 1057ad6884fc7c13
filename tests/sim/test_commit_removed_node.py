"""A write's commit compares the membership epoch, which every removal rewrites
(`storage/commit_nodes.py`): a node removed from the cluster map after the write placed its
shards, while this gateway's map is still the old one (another gateway removed it; the
membership refresh has not run), fails the commit: the write is refused with NodeRemoved,
never acknowledged naming the removed node. A harmless change meanwhile (a drain) does not
fail the commit at all: the map is not even re-read (review20b L3). The real object and multipart services over
simulated nodes; the removal is made from inside the write's body, after its last byte
was read, so the order is fixed (no timing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import membership as ms
from storage.errors import NodeRemoved, ObjectNotFound
from storage.multipart_records import UploadOptions
from storage.objects import PutOptions
from tests.sim.test_sim_repair import SEGMENT, Sim


def _body(s: Sim, state: str, size: int) -> AsyncIterator[bytes]:
    """`size` bytes; after the last one is read, every storage node is set to `state` in
    the metadata store only (this process's map is not refreshed)."""
    data = s.rnd.randbytes(size)

    async def gen() -> AsyncIterator[bytes]:
        yield data
        for n in s.cfg.nodes:
            await ms.set_state(s.meta, s.cfg, n.id, state)
    return gen()


@pytest.mark.parametrize("state", [ms.REMOVED, ms.DRAINING])
async def test_put_committed_only_if_no_named_node_was_removed(tmp_path: Path,
                                                               state: str) -> None:
    s = Sim(tmp_path, 3)
    await s.open(tmp_path)
    try:
        size = 2 * SEGMENT + 5
        await ms.refresh(s.meta, s.cfg, s.health)  # the map as the store has it (epoch 0)
        assert s.health.member_epoch == 0
        if state == ms.REMOVED:
            with pytest.raises(NodeRemoved):
                await s.objects.put(s.bucket, "k", _body(s, state, size),
                                    PutOptions(size_hint=size))
            with pytest.raises(ObjectNotFound):
                await s.objects.head(s.bucket, "k")
            assert not s.health.nodes  # the commit's re-read applied the map
        else:
            await s.objects.put(s.bucket, "k", _body(s, state, size), PutOptions(size_hint=size))
            v = await s.objects.head(s.bucket, "k")
            assert v.size == size
            # not re-read (that would have made the draining nodes unplaceable)
            assert len(s.health.placeable()) == len(s.cfg.nodes)
    finally:
        await s.close()


async def test_part_committed_only_if_no_named_node_was_removed(tmp_path: Path) -> None:
    s = Sim(tmp_path, 4)
    await s.open(tmp_path)
    try:
        await ms.refresh(s.meta, s.cfg, s.health)
        up = await s.cluster.multipart.create(s.bucket, "mp", UploadOptions())
        size = SEGMENT + 9
        with pytest.raises(NodeRemoved):
            await s.cluster.multipart.upload_part(s.bucket, "mp", up.upload_id, 1,
                                                  _body(s, ms.REMOVED, size), [], size)
        assert [p async for p in s.cluster.multipart.iter_parts(up.upload_id)] == []
    finally:
        await s.close()
