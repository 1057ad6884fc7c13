"""review20b: a many-part copy's staging (`archive_staging.stage`, archive transitions and
restores of more than `retiring.INLINE_PARTS` parts) must not be refused because the
membership changed after this gateway's map was last applied without touching the nodes its
stripes name: another node's removal moves the membership epoch every commit compares, the
step fails once, `recheck_nodes` re-reads the map and finds none of its nodes removed, and
the step must be tried again, not turned into a Conflict (which throws the whole copy away).
A drain no longer moves the epoch at all (mend20b); it is here too."""

from __future__ import annotations

import secrets
from pathlib import Path

from storage import archive_staging
from storage import membership as ms
from storage.keyspace import stripe_index_key
from storage.records import PartLayout
from tests.sim.test_sim_repair import SEGMENT, Sim


async def test_stage_goes_through_a_drain_and_another_nodes_removal(tmp_path: Path) -> None:
    s = Sim(tmp_path, 5)
    await s.open(tmp_path)
    try:
        ids = [n.id for n in s.cfg.nodes]
        parts = [PartLayout(number=i + 1, size=SEGMENT, etag="",
                            stripe_id=secrets.token_bytes(16), k=4, m=2,
                            segment_size=SEGMENT, nodes=ids[i % 3:i % 3 + 6])
                 for i in range(3)]
        named = {n for p in parts for n in p.nodes}
        other = next(n for n in ids if n not in named)
        # this gateway's map is not refreshed after either change
        await ms.set_state(s.meta, s.cfg, ids[0], ms.DRAINING)
        await ms.set_state(s.meta, s.cfg, other, ms.REMOVED)
        objects = s.cluster.objects
        marker = await archive_staging.begin(s.meta, parts)

        def index(puts: dict[bytes, bytes], p: PartLayout, compares: dict[bytes, int]) -> None:
            objects.index_part(puts, p, {"state": "restored", "bucket": "b", "key": "k",
                                         "version": "v", "part": p.number,
                                         "staging": marker.key}, compares)

        await archive_staging.stage(s.meta, marker, parts, index, objects.recheck_nodes)
        for p in parts:
            assert await s.meta.get(stripe_index_key(p.stripe_id)) is not None
    finally:
        await s.close()
