"""A lifecycle expiration removes only the version its pass decided on: a PUT acknowledged
between the pass's check and its delete survives (unversioned: it is not deleted; versioned:
no delete marker hides it). The race is forced: the write lands just before the engine's delete."""

from __future__ import annotations

import time
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


def _rule(**over: Any) -> dict[str, Any]:
    return dict(RULE, expiration=None) | over


async def _pass_racing(s: Sim, now: float, action: Any) -> list[Any]:
    """Run one lifecycle pass whose first delete is preceded by `action()`."""
    raced: list[Any] = []
    delete = s.objects.delete

    async def act_then_delete(*args: Any, **kw: Any) -> Any:
        if not raced:
            raced.append(await action(delete))
        return await delete(*args, **kw)

    setattr(s.objects, "delete", act_then_delete)  # noqa: B010 (a method, replaced)
    try:
        await s.cluster.lifecycle.run_once(now=now)
    finally:
        setattr(s.objects, "delete", delete)  # noqa: B010
    assert raced, "the pass deleted nothing: the race was not run"
    return raced


NONCURRENT = {"noncurrent_days": 1, "newer_noncurrent_versions": None}


async def _a_put_racing_the_pass_is_current(s: Sim, b: Any, now: float) -> ObjectVersion:
    """A fresh PUT of "k" lands just before the pass's delete: HEAD must answer it after."""
    fresh = b"new" * 30_000

    async def put(_: Any) -> ObjectVersion:
        return await s.objects.put(b, "k", _body(fresh), PutOptions(size_hint=len(fresh)))

    raced = await _pass_racing(s, now, put)
    current = await s.objects.head(b, "k")
    assert (current.version_id, current.last_modified) == (
        raced[0].version_id, raced[0].last_modified)
    return current


async def test_suspended_put_racing_a_noncurrent_null_expiry_survives(tmp_path: Path) -> None:
    """The noncurrent "null" version is due; a Suspended PUT replaces it (same id) first."""
    s = Sim(tmp_path, 5)
    await s.open(tmp_path)
    try:
        b = await s.buckets.update("t", "b")
        await s.objects.put(b, "k", _body(b"old" * 30_000), PutOptions(size_hint=90_000))
        b = await s.buckets.update("t", "b", versioning="Enabled")
        v2 = await s.objects.put(b, "k", _body(b"v2" * 30_000), PutOptions(size_hint=60_000))
        b = await s.buckets.update("t", "b", versioning="Suspended",
                                   lifecycle=[_rule(noncurrent_expiration=NONCURRENT)])
        await _a_put_racing_the_pass_is_current(s, b, v2.last_modified + LATER)
    finally:
        await s.close()


async def test_suspended_put_racing_an_expired_null_marker_survives(tmp_path: Path) -> None:
    """The only version is an expired "null" delete marker; a Suspended PUT replaces it."""
    s = Sim(tmp_path, 5)
    await s.open(tmp_path)
    try:
        b = await s.buckets.update("t", "b", versioning="Suspended")
        await s.objects.put(b, "k", _body(b"old" * 30_000), PutOptions(size_hint=90_000))
        marker = await s.objects.delete(b, "k")
        assert marker.delete_marker
        eodm = {"days": None, "date": None, "expired_object_delete_marker": True}
        b = await s.buckets.update("t", "b", lifecycle=[_rule(expiration=eodm)])
        current = await _a_put_racing_the_pass_is_current(s, b, raced_now())
        assert not current.delete_marker
    finally:
        await s.close()


async def test_rollback_racing_a_noncurrent_expiry_keeps_the_version(tmp_path: Path) -> None:
    """v1 is due as noncurrent; the user deletes v2 by id first, so v1 is current again."""
    s = Sim(tmp_path, 5)
    await s.open(tmp_path)
    try:
        b = await s.buckets.update("t", "b", versioning="Enabled")
        v1 = await s.objects.put(b, "k", _body(b"v1" * 30_000), PutOptions(size_hint=60_000))
        v2 = await s.objects.put(b, "k", _body(b"v2" * 30_000), PutOptions(size_hint=60_000))
        b = await s.buckets.update("t", "b", lifecycle=[_rule(noncurrent_expiration=NONCURRENT)])

        async def rollback(delete: Any) -> Any:
            return await delete(b, "k", v2.version_id)

        await _pass_racing(s, v2.last_modified + LATER, rollback)
        current = await s.objects.head(b, "k")
        assert current.version_id == v1.version_id
    finally:
        await s.close()


def raced_now() -> float:
    """A pass time past any delete marker written by the test (markers are due at once)."""
    return time.time() + LATER
