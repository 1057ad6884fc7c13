"""A worker whose steps fail on a full disk (`StorageFull`): one log line per failure, no
traceback, each pause twice the last, and it goes on once the disk has room again."""

from __future__ import annotations

import asyncio
import logging

import pytest

from storage.errors import StorageFull
from storage.workers import WorkerState
from storage.workers.runner import WorkerRunner


class _FullThenFine:
    """Fails `fails` steps with StorageFull, then sets `recovered` and idles."""

    name = "full-then-fine"

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.recovered = asyncio.Event()

    async def step(self) -> WorkerState:
        if self.fails:
            self.fails -= 1
            raise StorageFull("the metadata store's disk is full")
        self.recovered.set()
        return WorkerState.IDLE


async def test_full_disk_steps_back_off_in_one_line_each(
        caplog: pytest.LogCaptureFixture) -> None:
    worker = _FullThenFine(4)
    runner = WorkerRunner(idle_s=0.01)
    with caplog.at_level(logging.INFO, logger="tessera.workers"):
        runner.start(worker)
        try:
            await asyncio.wait_for(worker.recovered.wait(), 30)
        finally:
            await runner.stop()
    records = [r for r in caplog.records if r.name == "tessera.workers"]
    assert [r.levelno for r in records] == [logging.WARNING] * 4
    assert not any(r.exc_info for r in records)  # a traceback per step before
    assert [r.args[1] for r in records] == [0.01, 0.02, 0.04, 0.08]  # type: ignore[index]
    assert "disk is full" in records[0].getMessage()
