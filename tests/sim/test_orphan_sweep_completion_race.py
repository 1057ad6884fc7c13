"""The orphan sweep meeting an open part's completion (its stripe goes from
`state=part` to `state=live` between the sweep's read of the X entry and its read of the
part record). The sweep must not delete a shard the completed object names."""

from __future__ import annotations

from storage.shards.ids import shard_id
from storage.workers import manifests
from tests.sim.test_sim_repair import (  # noqa: F401 - the fixture
    open_upload_with_a_part,
    sim_factory,
)


async def test_orphan_sweep_racing_a_completion_keeps_the_object(sim_factory,  # noqa: F811
                                                                  monkeypatch) -> None:
    from storage.multipart_records import ListedPart

    s = await sim_factory(31)
    mp = s.cluster.multipart
    up, part, body = await open_upload_with_a_part(s)
    real = manifests._part_manifest
    raced: list[bool] = []

    async def complete_between(meta, ref, stripe_id):  # the X entry said "part" just now
        if not raced:
            raced.append(True)
            await mp.complete(s.bucket, "mp", up.upload_id, [ListedPart(1, part.etag)])
        return await real(meta, ref, stripe_id)

    await s.health.probe_once()
    await s.repair.sweep_step()  # a pass start: the volume stripes are known
    monkeypatch.setattr(manifests, "_part_manifest", complete_between)
    await s.repair._collect_orphans()  # orphan_grace_s=0 in the sim: every shard is old
    assert raced
    p = (await s.objects.head(s.bucket, "mp")).parts[0]
    missing = [i for i, n in enumerate(p.nodes) if shard_id(p.stripe_id, i) not in s.sim.files[n]]
    assert not missing, f"the orphan sweep deleted shards {missing} of the completed object"
