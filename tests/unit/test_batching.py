"""NodeBatcher: small ops queue while a batch is out and leave together; errors reach all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storage.shards.batching import NodeBatcher


class FakeNode:
    """Answers each batch when the test releases it; records what each batch carried."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def send(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.batches.append([op["n"] for op in ops])
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [{"status": 200, "n": op["n"]} for op in ops]


async def test_ops_queued_behind_a_batch_leave_together_in_order() -> None:
    node = FakeNode()
    b = NodeBatcher(node.send, max_inflight=1, max_ops=3)
    first = asyncio.create_task(b.submit({"n": 0}))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(b.submit({"n": n})) for n in range(1, 6)]
    await asyncio.sleep(0)
    assert node.batches == [[0]]  # one out; the others wait for it
    node.release.set()
    results = await asyncio.gather(first, *rest)
    assert [r["n"] for r in results] == list(range(6))
    assert node.batches == [[0], [1, 2, 3], [4, 5]]  # at most max_ops per request


async def test_a_failed_batch_fails_each_of_its_ops_and_the_next_batch_still_goes() -> None:
    node = FakeNode()
    b = NodeBatcher(node.send, max_inflight=1)
    node.fail = ConnectionError("node down")
    ops = [asyncio.create_task(b.submit({"n": n})) for n in range(3)]
    await asyncio.sleep(0)
    node.release.set()
    for t in ops:
        with pytest.raises(ConnectionError):
            await t
    node.fail = None
    assert (await b.submit({"n": 9}))["n"] == 9


async def test_an_op_whose_caller_gave_up_is_not_sent() -> None:
    node = FakeNode()
    b = NodeBatcher(node.send, max_inflight=1)
    first = asyncio.create_task(b.submit({"n": 0}))
    await asyncio.sleep(0)
    gone = asyncio.create_task(b.submit({"n": 1}))
    kept = asyncio.create_task(b.submit({"n": 2}))
    await asyncio.sleep(0)
    gone.cancel()
    node.release.set()
    assert (await first)["n"] == 0 and (await kept)["n"] == 2
    assert node.batches == [[0], [2]]
