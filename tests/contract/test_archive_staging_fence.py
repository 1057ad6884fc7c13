"""A staging marker written in a leased worker's step names the step's lease fence, and the
reclaim worker abandons it as soon as that fence moved on (the holder died, restarted or lost
the lease: its swap can no longer apply), without waiting the orphan grace, which a holder
restarting more often than the grace would otherwise keep from ever passing (review20g F1)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from storage import archive_staging
from storage.keyspace import discarded_key
from storage.leases import Leases
from storage.metadata import MetadataStore
from storage.metadata.fence import FENCE, Fence
from tests.contract.test_leases import name, pair  # noqa: F401

GRACE_S = 3600.0


def _parts(n: int) -> list[Any]:
    return [SimpleNamespace(stripe_id=bytes([i]) * 16, nodes=["n1", "n2"]) for i in range(n)]


async def _begin_in_step(meta: MetadataStore, fence: Fence) -> Any:
    token = FENCE.set(fence)
    try:
        return await archive_staging.begin(meta, _parts(3))
    finally:
        FENCE.reset(token)


@pytest.mark.parametrize("how", ["released", "taken-over"])
async def test_a_staging_whose_step_lease_moved_is_abandoned_at_once(
        pair: tuple[MetadataStore, MetadataStore], name: str, how: str) -> None:  # noqa: F811
    (ma, mb) = pair
    la, lb = Leases(ma), Leases(mb)
    a = await la.acquire(name, "host/a:1/10", 60)
    assert a is not None
    marker = await _begin_in_step(ma, Fence(a, a.fence_key, a.fence_revision))
    sweep = archive_staging.Sweep(mb, GRACE_S, clock=lambda: 0.0)  # the grace never passes
    assert await sweep.finish(marker) is False, "a staging of a live holder's step abandoned"
    assert await la.renew(a)  # a renewal (a keep-alive) does not move the fence
    assert await sweep.finish(marker) is False
    if how == "released":
        await la.release(a)
    else:  # the same gateway restarted: it takes its lease over at once
        b = await lb.acquire(name, "host/a:1/11", 60, succeeds="host/a:1/")
        assert b is not None
    assert await sweep.finish(marker) is True, "a dead step's staging waits the grace"
    assert await mb.get(marker.key) is None
    for p in _parts(3):
        assert await mb.get(discarded_key(p.stripe_id)) is not None
    if how != "released":
        assert b is not None
        await lb.release(b)


async def test_a_staging_outside_a_step_keeps_the_grace(
        pair: tuple[MetadataStore, MetadataStore]) -> None:  # noqa: F811
    ma, _ = pair
    now = [0.0]
    marker = await archive_staging.begin(ma, _parts(2))
    sweep = archive_staging.Sweep(ma, GRACE_S, clock=lambda: now[0])
    assert await sweep.finish(marker) is False
    now[0] = GRACE_S - 1
    assert await sweep.finish(marker) is False
    now[0] = GRACE_S
    assert await sweep.finish(marker) is True
