"""`storage.shards.streamslots.StreamSlots`: a read's first shard streams are admitted in
one step and in arrival order (no read holds some slots while it waits for others, so
crossing reads cannot deadlock), a stream added mid-read never waits, and an admission's
wait is capped, cancelled waits hold nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from storage.config import NodeSpec
from storage.shards.streamslots import StreamSlots

N1 = NodeSpec(id="n1", zone="az1", address="127.0.0.1:1")
N2 = NodeSpec(id="n2", zone="az1", address="127.0.0.1:2")


async def until(cond: Callable[[], bool]) -> None:
    """Return once `cond()` holds (the test's loop runs the other tasks meanwhile)."""
    async with asyncio.timeout(10):
        while not cond():
            await asyncio.sleep(0)


async def test_crossing_reads_are_admitted_whole_and_in_order() -> None:
    slots = StreamSlots(limit=1)
    await slots.admit([N1])  # a read holds n1
    b = asyncio.create_task(slots.admit([N1, N2]))  # waits for n1, holding no n2 meanwhile
    await until(lambda: slots.waiting == 1)
    c = asyncio.create_task(slots.admit([N2]))  # n2 is free, but b came first
    await until(lambda: slots.waiting == 2)
    assert slots.open == {N1.address: 1}
    slots.give(N1)
    await b
    assert slots.open == {N1.address: 1, N2.address: 1} and not c.done()
    slots.give_all(slots.open.copy())  # b's read ends
    await c
    assert slots.open == {N2.address: 1} and slots.overflows == 0


async def test_a_stream_added_mid_read_never_waits() -> None:
    slots = StreamSlots(limit=1)
    await slots.admit([N1])
    slots.add(N1)  # a failed source's replacement: over the bound rather than a wait
    assert slots.open[N1.address] == 2 and slots.overflows == 1
    slots.give(N1)
    slots.give(N1)
    assert not slots.open


async def test_a_cancelled_admission_holds_nothing_and_a_long_one_goes_over() -> None:
    slots = StreamSlots(limit=1, admit_wait_s=0.05)
    await slots.admit([N1])
    waiter = asyncio.create_task(slots.admit([N1, N2]))
    await until(lambda: slots.waiting == 1)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert slots.waiting == 0 and slots.open == {N1.address: 1}
    await slots.admit([N1])  # waited its cap: a consumer holding reads is delayed, not hung
    assert slots.open == {N1.address: 2} and slots.overflows == 1
