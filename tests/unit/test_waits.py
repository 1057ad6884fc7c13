"""A loop waiting on an event with a deadline stops when cancelled, even if the event is set
in the same moment (Python 3.11's `wait_for` dropped that cancellation: a gateway's worker
runner then never stopped)."""

from __future__ import annotations

import asyncio

import pytest

from storage.waits import wait_event
from storage.workers.wakes import Waiter


async def _cancel_as_set(wait, event_set, spins: int) -> None:
    task = asyncio.create_task(wait())
    for _ in range(3):
        await asyncio.sleep(0)  # the task waits on the event now
    event_set()
    for _ in range(spins):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)  # a bound on the test, not a sync
    try:
        assert task in done and task.cancelled(), "the cancelled loop runs on"
    finally:
        task.cancel()


@pytest.mark.parametrize("spins", [0, 1, 2])
async def test_a_cancel_arriving_as_the_event_is_set_is_not_lost(spins: int) -> None:
    ev = asyncio.Event()

    async def loop() -> None:
        while True:  # the shape of every wake-driven loop: wait, clear, work
            await wait_event(ev, 3600)
            ev.clear()

    await _cancel_as_set(loop, ev.set, spins)


@pytest.mark.parametrize("spins", [0, 1, 2])
async def test_a_worker_waiter_cancelled_as_woken_stops(spins: int) -> None:
    w = Waiter()

    async def loop() -> None:
        while True:
            w.arm()
            await w.wait(3600)

    await _cancel_as_set(loop, w.set, spins)


async def test_wait_event_says_whether_it_was_set() -> None:
    ev = asyncio.Event()
    assert await wait_event(ev, 0.01) is False
    ev.set()
    assert await wait_event(ev, 0.01) is True
