"""Node re-checks of frames the gateway found bad, run in the background.

A shard GET that carries `X-Tessera-Reader-Checks` is not checked on the node: the gateway's
`FrameAssembler` checks every frame. So that a node whose disk holds a bad frame still
finds it and quarantines the shard (the repair sweep then rebuilds it), the fetcher asks
for that frame once more with the node checking it (`storage.shards.fetch`). That request
runs here, off the read's path: the read routes around the shard at once, and a node that
stalls (a failing disk) holds up nothing but this task.

Tasks are tracked (none is left to the garbage collector) and bounded: one per shard at a
time, `limit` in all (a check dropped beyond that is left to the node's scrubber), each
given up after `timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from storage.errors import StorageError

log = logging.getLogger("tessera.shards")

LIMIT = 16  # checks running at once, over all nodes
TIMEOUT_S = 5.0  # connect, request and one frame's read and check on the node


class NodeChecks:
    """The fetcher's background node checks, keyed by (node id, shard id)."""

    def __init__(self, limit: int = LIMIT, timeout_s: float = TIMEOUT_S) -> None:
        self.limit = limit
        self.timeout_s = timeout_s
        self.dropped = 0  # checks not started: one for the shard was running, or `limit`
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, key: tuple[str, str],
              check: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run `check()` in the background unless one for `key` runs or `limit` do (or no
        event loop runs: an async generator finalized at interpreter exit)."""
        if key in self._tasks or len(self._tasks) >= self.limit:
            self.dropped += 1
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        task = loop.create_task(self._run(key, check()))
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._done(key, t))
        return True

    async def _run(self, key: tuple[str, str], check: Coroutine[Any, Any, None]) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await check
        except (StorageError, OSError, TimeoutError) as exc:
            log.info("node check of shard %s on %s: %s", key[1], key[0], exc)

    def _done(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]

    async def wait(self) -> None:
        """Until every check started (also those started meanwhile) has ended."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def close(self) -> None:
        """Cancel every running check (the fetcher is shutting down)."""
        for task in self._tasks.values():
            task.cancel()
