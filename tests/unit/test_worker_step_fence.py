"""A leased worker's process stalled past its lease's TTL (SIGSTOP, a frozen VM, a starved
event loop) neither goes on with the step it was in nor starts another when it resumes: by
then another gateway may hold the lease and run the same worker (storage/workers/stepfence.py).

The stall is the fault injected here: a callback that blocks the event loop (time.sleep) for
longer than the TTL, as a stopped process does; an answer the step was waiting for arrives
during it (from the loop's own queue, as a gRPC answer does via call_soon_threadsafe).
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from storage import leaseclock
from storage.leases import Lease
from storage.workers import WorkerState
from storage.workers.runner import WorkerRunner

TTL_S = 1.0
STALL_S = 1.5 * TTL_S


class _Store:
    """Leases as a store sees them: granted once (then another gateway holds it), renewed
    only while unexpired."""

    def __init__(self) -> None:
        self.granted = 0
        self.released = asyncio.Event()

    async def acquire(self, name: str, holder: str, ttl_s: float, succeeds: str = "") -> Lease | None:
        self.granted += 1
        return Lease(name, holder, ttl_s, 1, leaseclock.now()) if self.granted == 1 else None

    async def renew(self, lease: Lease) -> bool:
        start = leaseclock.now()
        if start - lease.renewed_at >= lease.ttl_s:
            return False  # expired in the store while the holder was stalled
        lease.renewed_at = start
        return True

    async def release(self, lease: Lease) -> None:
        self.released.set()


class _Worker:
    """Each step waits for `answer` (when `waits`), then counts itself done."""

    name = "fenced"

    def __init__(self, waits: bool) -> None:
        self.waits = waits
        self.started = self.done = 0
        self.answer = asyncio.Event()
        self.in_step = asyncio.Event()

    async def step(self) -> WorkerState:
        self.started += 1
        self.in_step.set()
        if self.waits:
            await self.answer.wait()
        self.done += 1
        return WorkerState.IDLE


def _stall(loop: asyncio.AbstractEventLoop, worker: _Worker) -> int:
    """Stall the loop; the steps started before it."""
    before = worker.started
    time.sleep(STALL_S)  # the whole process stopped past the lease's TTL
    if worker.waits:  # the answer came in meanwhile: queued when the process resumes
        loop.call_soon_threadsafe(worker.answer.set)
    return before


async def _run_stalled(worker: _Worker) -> tuple[int, int]:
    store = _Store()
    runner = WorkerRunner(idle_s=0.01, leases=store, holder="gw", lease_ttl_s=TTL_S)  # type: ignore[arg-type]
    runner.start(worker)
    try:
        await asyncio.wait_for(worker.in_step.wait(), 30)
        loop = asyncio.get_running_loop()
        stalled: asyncio.Future[int] = loop.create_future()
        loop.call_soon(lambda: stalled.set_result(_stall(loop, worker)))
        before = await stalled
        await asyncio.wait_for(store.released.wait(), 30)  # the runner gave the lease up
        return worker.started - before, worker.done
    finally:
        await runner.stop()


async def test_a_step_in_flight_when_the_lease_ran_out_is_cancelled() -> None:
    started_after, done = await _run_stalled(_Worker(waits=True))
    assert done == 0  # it went on with the answer after its lease ran out: 1
    assert started_after == 0


async def test_no_step_starts_after_the_lease_ran_out() -> None:
    worker = _Worker(waits=False)
    started_after, _ = await _run_stalled(worker)
    assert started_after == 0  # its idle pause ended during the stall: the next step ran


class _SilentStore(_Store):
    """A store that never answers a renewal (a frozen etcd member, a stalled SQLite lock)."""

    async def renew(self, lease: Lease) -> bool:
        await asyncio.Event().wait()
        return True


async def test_a_renewal_that_times_out_is_logged_with_its_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    """A renewal the store left unanswered was logged as "cannot renew its lease: " with
    nothing after it (str() of a TimeoutError is empty; newuser20 saw a page of them in
    gateway.log): the warning now says the store did not answer, and within how long."""
    store = _SilentStore()
    runner = WorkerRunner(idle_s=0.01, leases=store, holder="gw", lease_ttl_s=TTL_S)  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, logger="tessera.workers")
    runner.start(_Worker(waits=False))
    try:
        await asyncio.wait_for(store.released.wait(), 30)  # the TTL ran out unrenewed
    finally:
        await runner.stop()
    said = [r.getMessage() for r in caplog.records if "cannot renew" in r.getMessage()]
    assert said and all("did not answer within" in m for m in said), said
