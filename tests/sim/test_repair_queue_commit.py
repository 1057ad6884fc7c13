"""A degraded write's repair-queue entry is written by the transaction that commits it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from storage.errors import InvalidInput
from storage.keyspace import REPAIR, space, stripe_index_key, stripe_of
from storage.objects import ObjectVersion, PutOptions
from tests.sim.test_sim_repair import Sim


async def _body(data: bytes):
    yield data


async def _degraded_sim(tmp_path: Path) -> Sim:
    """4+2 over 3 zones of 3 nodes, acknowledged at k shards; zone az1 is down (and known
    down) and node n4 of az2 fails writes while the gateway still thinks it up. Only five
    nodes can take a shard, so no spare is left for n4's shard: one is missing and the PUT
    still commits."""
    s = Sim(tmp_path, 7)
    s.cfg = dataclasses.replace(s.cfg, write_quorum_extra=0)
    await s.open(tmp_path)
    s.sim.down |= {"n1", "n2", "n3", "n4"}
    for nid in ("n1", "n2", "n3"):
        s.health.report_failure(nid, "Connect call failed (simulated)")
    return s


async def test_committed_degraded_write_queues_its_stripe(tmp_path: Path) -> None:
    s = await _degraded_sim(tmp_path)
    try:
        v = await s.objects.put(s.bucket, "k", _body(b"x" * 70_000), PutOptions(size_hint=70_000))
        (part,) = v.parts
        assert None in part.nodes  # the write really was degraded
        queued = [stripe_of(i.key) for i in await s.meta.range(*space(REPAIR), limit=10)]
        assert queued == [part.stripe_id]
        assert await s.meta.get(stripe_index_key(part.stripe_id)) is not None
    finally:
        await s.close()


async def test_write_that_never_commits_queues_nothing(tmp_path: Path) -> None:
    s = await _degraded_sim(tmp_path)

    async def veto(v: ObjectVersion) -> None:
        assert None in v.parts[0].nodes
        raise InvalidInput("checksum mismatch")

    try:
        try:
            await s.objects.put(s.bucket, "k", _body(b"x" * 70_000),
                                PutOptions(size_hint=70_000), finalize=veto)
        except InvalidInput:
            pass
        else:
            raise AssertionError("the veto did not stop the commit")
        assert await s.meta.range(*space(REPAIR), limit=10) == []
    finally:
        await s.close()
