"""review20b: a many-part copy's staging (`CopyStaging.stage`, archive transitions and
restores of more than `retiring.INLINE_PARTS` parts) must not be refused because a node
its stripes name was *drained* (its membership record rewritten, not removed) after this
gateway's map was last applied: the commit compares of `commit_nodes.guard` fail once,
`recheck` finds nothing removed, and the step must be retried, not turned into "a
rewritten stripe was discarded" (which throws the whole copy away)."""

from __future__ import annotations

import secrets
from pathlib import Path

from storage import membership as ms
from storage.keyspace import stripe_index_key
from storage.records import PartLayout
from tests.sim.test_sim_repair import SEGMENT, Sim


async def test_stage_goes_through_a_drain_meanwhile(tmp_path: Path) -> None:
    s = Sim(tmp_path, 5)
    await s.open(tmp_path)
    try:
        ids = [n.id for n in s.cfg.nodes]
        parts = [PartLayout(number=i + 1, size=SEGMENT, etag="", stripe_id=secrets.token_bytes(16),
                            k=4, m=2, segment_size=SEGMENT, nodes=ids[i % 3:i % 3 + 6])
                 for i in range(3)]
        await ms.set_state(s.meta, s.cfg, ids[0], ms.DRAINING)  # this map not refreshed yet
        await s.cluster.archive.staging.stage(parts, lambda p: {
            "state": "restored", "bucket": "b", "key": "k", "version": "v", "part": p.number})
        for p in parts:
            assert await s.meta.get(stripe_index_key(p.stripe_id)) is not None
    finally:
        await s.close()
