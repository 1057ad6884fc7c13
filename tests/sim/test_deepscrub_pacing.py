"""The deep scrub charges every live stripe at least STRIPE_FLOOR_BYTES of its byte rate: a
manifest load and k+m reads cost CPU however small the stripe, so a cluster of a million
small objects is scrubbed at a bounded stripe rate (its idle cost stays flat), not at full
speed because the bytes are few. Simulated nodes, the real deep scrubber."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.lying import LyingShards
from storage.workers.deepscrub import STRIPE_FLOOR_BYTES, DeepScrubber, DeepScrubSettings
from tests.sim.test_sim_repair import Sim

OBJECTS = 10
MIB = 2**20


class Counted:
    """A throttle that records what is charged to it (and never waits)."""

    def __init__(self) -> None:
        self.charged = 0

    async def consume(self, n: int) -> None:
        self.charged += n


async def test_small_stripes_cost_the_floor_each(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    s = Sim(tmp_path, 3)
    await s.open(tmp_path)
    try:
        for i in range(OBJECTS):
            await s.put(f"o{i}", 100)  # (inline is off in the sim: each is a stripe)
        scrub = DeepScrubber(s.cfg, s.meta, s.objects, s.sim, s.health, s.pool,
                             LyingShards(s.meta, s.sim), DeepScrubSettings(rate_bytes_s=MIB))
        counted = Counted()
        monkeypatch.setattr(scrub, "_throttle", counted)
        for _ in range(OBJECTS):
            await scrub.step()
            if scrub.stats.passes:
                break
        assert scrub.stats.passes == 1
        assert scrub.stats.stripes_checked == OBJECTS
        assert scrub.stats.bytes_checked < OBJECTS * STRIPE_FLOOR_BYTES  # the bytes are few
        assert counted.charged >= OBJECTS * STRIPE_FLOOR_BYTES  # the stripes are not
    finally:
        await s.close()


async def test_progress_is_written_per_pass_not_per_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass of several steps writes its progress once when it starts (PUBLISH_S apart
    after that) and once at its end, not once per 8-stripe step."""
    import storage.workers.deepscrub as ds

    s = Sim(tmp_path, 4)
    await s.open(tmp_path)
    try:
        for i in range(3 * ds.BATCH + 1):
            await s.put(f"o{i}", 100)
        writes: list[object] = []
        real = ds.update_integrity

        async def counted(meta: object, change: object) -> object:
            writes.append(change)
            return await real(meta, change)

        monkeypatch.setattr(ds, "update_integrity", counted)
        monkeypatch.setattr(ds, "PUBLISH_S", 3600.0)
        scrub = DeepScrubber(s.cfg, s.meta, s.objects, s.sim, s.health, s.pool,
                             LyingShards(s.meta, s.sim), DeepScrubSettings(rate_bytes_s=1e12))
        steps = 0
        while not scrub.stats.passes and steps < 20:
            await scrub.step()
            steps += 1
        assert steps == 4
        assert len(writes) == 2  # the first step's and the pass end's
    finally:
        await s.close()
