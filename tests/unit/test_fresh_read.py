"""FreshRead (storage/metadata/freshread.py): a caller never gets a read that began before
it asked (it waits for the next one, which serves everyone who asked meantime), and an
error reaches every caller of that read. A fake read held back by futures the test sets."""

from __future__ import annotations

import asyncio

import pytest

from storage.metadata.freshread import FreshRead


class HeldReads:
    """Each read waits on a future of its own (`gates`, in order)."""

    def __init__(self) -> None:
        self.gates: list[asyncio.Future[int]] = []
        self.began = asyncio.Event()

    async def read(self) -> int:
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        self.began.set()
        return await gate

    async def next_read(self) -> asyncio.Future[int]:
        await self.began.wait()
        self.began.clear()
        return self.gates[-1]


async def test_a_caller_waits_for_a_read_begun_after_it_asked() -> None:
    held = HeldReads()
    fresh = FreshRead(held.read)
    first = asyncio.create_task(fresh.get())
    gate = await held.next_read()
    later = [asyncio.create_task(fresh.get()) for _ in range(5)]  # asked while it is in flight
    await asyncio.sleep(0)
    assert len(held.gates) == 1  # not joined to the read in flight, not one read each
    gate.set_result(1)
    assert await first == 1
    gate = await held.next_read()
    gate.set_result(2)
    assert await asyncio.gather(*later) == [2] * 5
    assert fresh.reads == 2


async def test_an_error_reaches_every_caller_of_that_read_only() -> None:
    held = HeldReads()
    fresh = FreshRead(held.read)
    callers = [asyncio.create_task(fresh.get()) for _ in range(3)]
    gate = await held.next_read()
    gate.set_exception(ConnectionError("etcd went away"))
    for c in callers:
        with pytest.raises(ConnectionError):
            await c
    after = asyncio.create_task(fresh.get())
    gate = await held.next_read()
    gate.set_result(7)
    assert await after == 7
