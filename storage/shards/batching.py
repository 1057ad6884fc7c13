"""Gathering the small shard operations bound for one node into batch requests.

Each node has a `NodeBatcher`. Operations queue while up to `max_inflight` batch requests
to that node are already out; the next request carries everything queued by then (at most
`max_ops` ops or about `max_bytes` bytes). Under load a request carries several shards and
their per-request cost (HTTP, authentication, thread hops, journal commits on the node) is
shared; when idle an operation goes out at once, alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Sender = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


class NodeBatcher:
    def __init__(self, send: Sender, max_inflight: int = 1, max_ops: int = 64,
                 max_bytes: int = 2 * 1024 * 1024) -> None:
        self._send = send
        self._max_inflight = max_inflight
        self._max_ops = max_ops
        self._max_bytes = max_bytes
        self._queue: list[tuple[dict[str, Any], int, asyncio.Future[dict[str, Any]]]] = []
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, op: dict[str, Any], size: int = 0) -> dict[str, Any]:
        """Run one op; returns its result dict, or raises what sending the batch raised."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((op, size, fut))
        if self._inflight < self._max_inflight:
            self._start()
        return await fut

    def _start(self) -> None:
        batch: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = []
        total = 0
        while self._queue and len(batch) < self._max_ops:
            op, size, fut = self._queue[0]
            if batch and total + size > self._max_bytes:
                break
            self._queue.pop(0)
            if fut.done():  # its caller gave up before it was sent
                continue
            batch.append((op, fut))
            total += size
        if not batch:
            return
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]],
                   ) -> None:
        try:
            results = await self._send([op for op, _ in batch])
            if len(results) != len(batch):
                raise ValueError(f"{len(results)} results for {len(batch)} ops")
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
        except BaseException as exc:  # noqa: BLE001 - every waiter learns why
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception)
                                      else RuntimeError("batch interrupted"))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._inflight -= 1
            while self._queue and self._inflight < self._max_inflight:
                self._start()
