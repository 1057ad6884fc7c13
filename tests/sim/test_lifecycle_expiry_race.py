"""A lifecycle expiration removes only the version its pass decided on: a PUT acknowledged
between the pass's check and its delete survives (unversioned: it is not deleted; versioned:
no delete marker hides it). The race is forced: the write lands just before the engine's delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storage.objects import PutOptions
from storage.records import ObjectVersion
from tests.sim.test_sim_repair import Sim

RULE = {"id": "r", "status": "Enabled", "filter": {"prefix": None, "tags": {}, "size_gt": None,
                                                  "size_lt": None},
        "legacy_prefix": False, "expiration": {"days": 1, "date": None,
                                               "expired_object_delete_marker": None},
        "transitions": [], "noncurrent_expiration": None, "noncurrent_transitions": [],
        "abort_incomplete_mpu_days": None}
LATER = 10 * 86400.0  # a pass this far past the writes: the first version is due


async def _body(data: bytes):
    yield data


@pytest.mark.parametrize("versioning", [None, "Enabled"])
async def test_write_racing_an_expiration_survives(tmp_path: Path, versioning: str | None,
                                                  ) -> None:
    s = Sim(tmp_path, 5)
    await s.open(tmp_path)
    try:
        b = await s.buckets.update("t", "b", lifecycle=[RULE], versioning=versioning)
        await s.objects.put(b, "k", _body(b"old" * 30_000), PutOptions(size_hint=90_000))
        engine = s.cluster.lifecycle
        fresh = b"new" * 30_000
        raced: list[ObjectVersion] = []
        delete = s.objects.delete

        async def write_then_delete(*args: Any, **kw: Any) -> Any:
            if not raced:  # the pass decided on the old version; a PUT lands before its delete
                raced.append(await s.objects.put(b, "k", _body(fresh),
                                                 PutOptions(size_hint=len(fresh))))
            return await delete(*args, **kw)

        setattr(s.objects, "delete", write_then_delete)  # noqa: B010 (a method, replaced)
        start = (await s.objects.head(b, "k")).last_modified
        await engine.run_once(now=start + LATER)
        assert raced, "the pass deleted nothing: the race was not run"
        current = await s.objects.head(b, "k")
        assert not current.delete_marker
        assert current.version_id == raced[0].version_id
        assert current.last_modified == raced[0].last_modified
    finally:
        await s.close()
