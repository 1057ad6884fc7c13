"""A write decided on the request's one read of the bucket commits only if the bucket is
unchanged (`BucketService.guard`): a bucket reconfigured or deleted before the commit is read
again there, and the commit follows its new state."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.errors import BucketNotFound
from storage.keyspace import object_prefix, span, version_prefix
from storage.objects import PutOptions
from storage.records import ObjectVersion
from tests.sim.test_sim_repair import Sim


async def _body(data: bytes):
    yield data


async def test_versioning_enabled_before_the_commit_is_honoured(tmp_path: Path) -> None:
    s = Sim(tmp_path, 3)
    await s.open(tmp_path)
    try:
        stale = s.bucket  # read before versioning is enabled

        async def enable(_: ObjectVersion) -> None:  # runs between the data and the commit
            await s.buckets.update("t", "b", versioning="Enabled")

        await s.objects.put(stale, "k", _body(b"x" * 70_000), PutOptions(size_hint=70_000),
                            enable)
        history = await s.meta.range(*span(version_prefix("b", "k")), limit=10)
        assert len(history) == 1  # committed under the bucket's new state: kept in V/
    finally:
        await s.close()


async def test_bucket_deleted_before_the_commit_fails_the_write(tmp_path: Path) -> None:
    s = Sim(tmp_path, 4)
    await s.open(tmp_path)
    try:
        async def drop(_: ObjectVersion) -> None:
            await s.buckets.delete(s.bucket)

        with pytest.raises(BucketNotFound):
            await s.objects.put(s.bucket, "k", _body(b"x" * 70_000),
                                PutOptions(size_hint=70_000), drop)
        for prefix in (object_prefix("b"), version_prefix("b")):
            assert not await s.meta.range(*span(prefix), limit=1)
    finally:
        await s.close()
