"""A key rotation and the rewrap worker: a rewrap pass that runs between a rotation's marking
of the tenant for rewrapping and the new KEK version becoming current must not end the
rewrap (it saw nothing stale: the old version was still current), or the tenant's data keys
stay wrapped under the old KEK with no marker left to rewrap them."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import keys_rotation as kr
from storage.keyspace import rewrap_key
from storage.workers import WorkerState
from storage.workers.keys import Rewrapper
from tests.sim.test_sim_repair import SEGMENT, Sim

PASSES_MAX = 50  # a bound on a worker that never idles (the test fails rather than hang)


async def _until_idle(r: Rewrapper) -> None:
    for _ in range(PASSES_MAX):
        if await r.step() is WorkerState.IDLE:
            return
    raise AssertionError("the rewrap worker never went idle")


async def test_a_pass_inside_a_rotation_does_not_end_the_rewrap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Sim(tmp_path, 5)
    await s.open(tmp_path)
    try:
        await s.put("o", SEGMENT + 3)
        r = Rewrapper(s.meta, s.tenants)
        rotate = s.tenants.rotate

        async def rotate_after_a_whole_pass(
                tenant: str, marks: dict[bytes, bytes] | None = None) -> int:
            await _until_idle(r)  # the worker runs in the gap, as another gateway's may
            return await rotate(tenant, marks)

        monkeypatch.setattr(s.tenants, "rotate", rotate_after_a_whole_pass)
        version = await kr.rotate(s.meta, s.tenants, "t")
        assert (await s.tenants.get("t")).current_kek == version == 2
        assert await s.meta.get(rewrap_key("t")) is not None, "the rewrap was ended early"
        await _until_idle(r)
        assert (await s.objects.head(s.bucket, "o")).kek_version == version
        assert await s.meta.get(rewrap_key("t")) is None
        assert await s.read("o") == s.data["o"]
    finally:
        await s.close()
