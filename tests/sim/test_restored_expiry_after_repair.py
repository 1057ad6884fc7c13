"""A restored copy expiring after repair moved one of its shards: the expiry must queue
for collection the copy's shards where the version's record names them now, not where
they were at restore time (its `AE` entry): the rebuilt shard was left on its node, named
by nothing, until the orphan sweep's grace (24 h) had passed."""

from __future__ import annotations

import dataclasses
import time
import types

from storage import archive as archive_mod
from storage.keyspace import GC, space
from storage.keyspace import unpack as unpack_key
from storage.objects import PutOptions
from storage.records import PartLayout, unpack
from tests.sim.test_sim_repair import SEGMENT, sim_factory  # noqa: F401 - the fixture


async def test_expiry_collects_the_copy_where_repair_moved_it(sim_factory,  # noqa: F811
                                                              monkeypatch) -> None:
    s = await sim_factory(43)
    arch = s.cluster.archive
    arch.settings = dataclasses.replace(arch.settings, expedited_s=0.0)  # restored at once
    body = s.rnd.randbytes(2 * SEGMENT + 5)

    async def src():
        yield body

    await s.objects.put(s.bucket, "o", src(), PutOptions(size_hint=len(body),
                                                          storage_class="GLACIER"))
    await arch.request_restore(s.bucket, "o", None, 1, "Expedited")
    assert await arch.complete_due_restores() == 1
    (p,) = [PartLayout(**r) for r in (await s.objects.head(s.bucket, "o")).restore["parts"]]
    lost = p.nodes[0]
    assert lost is not None
    s.sim.down.add(lost)  # the copy's shard 0 is rebuilt on another node
    await s.health.probe_once()
    for _ in range(40):  # (the archived stripe may have lost a shard on that node too)
        await s.repair.step()
        (moved,) = [PartLayout(**r)
                    for r in (await s.objects.head(s.bucket, "o")).restore["parts"]]
        if moved.nodes[0] not in (None, lost):
            break
    assert moved.nodes[0] not in (None, lost), "repair did not rebuild the copy's shard 0"

    later = time.time() + 400 * 86400  # past the copy's expiry
    monkeypatch.setattr(archive_mod, "time", types.SimpleNamespace(
        time=lambda: later, time_ns=time.time_ns))
    assert await arch.expire_restored() == 1
    queued = [unpack(i.value)["nodes"] for i in await s.meta.range(*space(GC), limit=100)
              if unpack_key(i.key)[2] == p.stripe_id.hex()]
    assert any(n[0] == moved.nodes[0] for n in queued), (
        f"the rebuilt shard 0 on {moved.nodes[0]} is not queued for collection: {queued}")
