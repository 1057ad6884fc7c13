"""A write's commit compares the membership records of the nodes its stripe names
(`storage/commit_nodes.py`): a node removed from the cluster map after the write placed its
shards, while this gateway's map is still the old one (another gateway removed it; the
membership refresh has not run), fails the commit: the write is refused with NodeRemoved,
never acknowledged naming the removed node. A harmless change meanwhile (a drain) only makes
the commit re-read the map and go through. The real object and multipart services over
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
        assert all(s.health.member_revision(n.id) == 0 for n in s.cfg.nodes)  # stale map
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
            assert all(s.health.member_revision(n.id) for n in s.cfg.nodes)  # re-read
    finally:
        await s.close()


async def test_part_committed_only_if_no_named_node_was_removed(tmp_path: Path) -> None:
    s = Sim(tmp_path, 4)
    await s.open(tmp_path)
    try:
        up = await s.cluster.multipart.create(s.bucket, "mp", UploadOptions())
        size = SEGMENT + 9
        with pytest.raises(NodeRemoved):
            await s.cluster.multipart.upload_part(s.bucket, "mp", up.upload_id, 1,
                                                  _body(s, ms.REMOVED, size), [], size)
        assert [p async for p in s.cluster.multipart.iter_parts(up.upload_id)] == []
    finally:
        await s.close()
