"""Review20g probes of life20's staging marker: a staging abandoned (by the reclaim worker:
a paused gateway, seen unchanged for the grace) between its last staging step and its swap,
or while the swap's compare-and-swap loop retries, never has its swap apply, and leaves
nothing staged behind."""

from __future__ import annotations

from typing import Any

import pytest

from storage import archive_staging
from storage.cluster import Cluster
from storage.keyspace import STAGING, discarded_key, space, stripe_index_key
from tests.contract.test_archive_staging import _body, _whole
from tests.contract.test_many_part_retire import _version, served  # noqa: F401
from tests.contract.test_retire_review19h import _archive_profile, _put


@pytest.mark.parametrize("when", ["before-swap", "after-refused-swap"])
async def test_a_staging_abandoned_before_its_swap_never_swaps(
        served: tuple[Any, Cluster, str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    s3, cluster, bucket = served
    meta, archive = cluster.meta, cluster.archive
    await _put(s3, bucket, "a", 60)
    v = await _version(meta, bucket, "a")
    _archive_profile(cluster)
    written: list[Any] = []
    rewrite, real_mutate = archive._rewrite_parts, archive.mutate  # noqa: SLF001

    async def noted(*a: Any, **kw: Any) -> Any:
        written.extend(await rewrite(*a, **kw))
        return written

    async def abandon_all() -> None:
        for it in await meta.range(*space(STAGING), limit=100):
            await archive_staging.undo(meta, it.key, 3600.0)  # (as the reclaim worker)

    async def mutate(bucket_: str, key: str, vid: Any, fn: Any, holds: Any = None) -> Any:
        if when == "before-swap":
            await abandon_all()
            return await real_mutate(bucket_, key, vid, fn, holds)
        first = [True]

        def racing(cur: Any) -> Any:
            ch = fn(cur)
            if first[0] and ch is not None:  # the first attempt's compare made stale
                first[0] = False
                ch.compares[stripe_index_key(b"\0" * 16)] = 12345
            return ch

        async def holds_after_abandon() -> bool:
            await abandon_all()
            return await holds()

        return await real_mutate(bucket_, key, vid, racing, holds_after_abandon)

    monkeypatch.setattr(archive, "_rewrite_parts", noted)
    monkeypatch.setattr(archive, "mutate", mutate)
    assert await archive.transition(v, "GLACIER") is False
    assert await _version(meta, bucket, "a") == v, "a swap applied after its marker was abandoned"
    assert written
    for p in written:
        assert await meta.get(stripe_index_key(p.stripe_id)) is None
        assert await meta.get(discarded_key(p.stripe_id)) is not None
    assert await meta.range(*space(STAGING), limit=10) == []
    assert await _whole(s3, bucket, "a") == _body(60)
