"""The time Object Lock retention is judged by: this process's clock, but never ahead of the
storage nodes' clocks.

A retention ends at a wall-clock instant, and each gateway used its own clock to decide that
it had: a gateway whose clock ran fast let a locked version be deleted (or its retention
shortened, or its tenant shredded) early. AWS judges it by S3's clock; here no one clock
is S3's, so a lock ends only once this process's clock AND the clocks of a majority of the
storage nodes say so: `now()` is the smaller of `time.time()` and the nodes' time (their
health documents' `now`, each a lower bound of that node's clock when its answer arrived,
carried forward with this process's monotonic clock, which a step of the wall clock does not
move). The nodes' time is the latest instant that a majority of ALL the nodes (not only of
those that answered) told a clock at or past, so a fast minority cannot move it; one fast
clock, the gateway's or a few nodes', cannot end a lock early, and a slow one only keeps it a
little longer (safe, where early is not).

The nodes are asked again after `REFRESH_S`, and only when a judgement needs them: a retention
that this process's clock says is still running is running by the lock clock too (it is never
ahead of `time.time()`), so callers judge by `time.time()` first and ask `now()` only for one
it says has ended (`storage.object_lock.judged`). A reading answers once a majority of the
nodes has, plus `STRAGGLER_S` for the rest (one blackholed node does not hold it for the full
`PROBE_TIMEOUT_S`).

When a majority of the nodes does not answer, the time cannot be vouched for:
`ClockUnverified` (503 to S3 clients, retried by SDKs), never the process's own clock alone.

`floor()` is the other side, for a new version's default retention (its retain-until is
`floor() + period`): never earlier than the nodes' time, so a slow gateway clock does not
make a default lock end early by the nodes' clocks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence

from storage.config import NodeSpec
from storage.errors import StorageError
from storage.shards.transport import NodeTransport

REFRESH_S = 30.0  # the nodes' clocks are read again after this long
PROBE_TIMEOUT_S = 2.0  # the longest a reading waits for a majority of the nodes
STRAGGLER_S = 0.2  # once a majority answered, how much longer the rest are waited for
FAILED_HOLD_S = 1.0  # a failed reading answers callers this long (no probe round each)


class ClockUnverified(StorageError):
    """Too few storage nodes told their time to judge an Object Lock retention now."""


class LockClock:
    """`now()`: the time Object Lock expiry is judged by (see the module docstring)."""

    def __init__(self, nodes: NodeTransport, cluster: Callable[[], Sequence[NodeSpec]]) -> None:
        self._nodes = nodes
        self._cluster = cluster
        self._base: float | None = None  # the nodes' time minus the monotonic clock
        self._read_at = 0.0  # monotonic time of that reading
        self._reading: asyncio.Lock | None = None
        self._failed: tuple[float, ClockUnverified] | None = None  # (monotonic, why)

    async def now(self) -> float:
        """The smaller of this process's clock and the nodes' (ClockUnverified if a
        majority of the nodes does not answer when they must be read)."""
        await self._fresh()
        assert self._base is not None
        return min(time.time(), self._base + time.monotonic())

    async def floor(self) -> float:
        """The larger of this process's clock and the nodes' time (the last reading when
        they cannot be read now; this process's clock alone if they never could): where a
        new version's default retention starts."""
        try:
            await self._fresh()
        except ClockUnverified:
            pass
        if self._base is None:
            return time.time()
        return max(time.time(), self._base + time.monotonic())

    async def _fresh(self) -> None:
        """Read the nodes' clocks unless a reading younger than REFRESH_S exists."""
        if self._base is not None and time.monotonic() - self._read_at <= REFRESH_S:
            return
        if self._reading is None:
            self._reading = asyncio.Lock()
        async with self._reading:  # one reading for every caller waiting on it
            if self._base is not None and time.monotonic() - self._read_at <= REFRESH_S:
                return
            if self._failed and time.monotonic() - self._failed[0] < FAILED_HOLD_S:
                raise ClockUnverified(str(self._failed[1]))  # (callers queued on it)
            try:
                await self._read()
            except ClockUnverified as exc:
                self._failed = (time.monotonic(), exc)
                raise

    async def _read(self) -> None:
        nodes = list(self._cluster())
        majority = len(nodes) // 2 + 1
        started = time.monotonic()
        offsets = await self._answers(nodes, majority)
        if not nodes or len(offsets) < majority:
            raise ClockUnverified(f"{len(offsets)} of {len(nodes)} storage nodes told their "
                                  "time: an Object Lock retention cannot be judged now")
        # the latest time at or below the told clocks of `majority` nodes: with every node
        # answering, the median (low); with fewer, lower (a fast minority moves it no more)
        self._base, self._read_at = sorted(offsets)[len(offsets) - majority], started

    async def _answers(self, nodes: list[NodeSpec], majority: int) -> list[float]:
        """The offsets told within PROBE_TIMEOUT_S, the stragglers cut STRAGGLER_S after
        the majority-th answer."""
        pending = {asyncio.ensure_future(self._one(n)) for n in nodes}
        offsets: list[float] = []
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        try:
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                done, pending = await asyncio.wait(pending, timeout=left,
                                                   return_when=asyncio.FIRST_COMPLETED)
                offsets.extend(o for o in (t.result() for t in done) if o is not None)
                if len(offsets) >= majority:
                    deadline = min(deadline, time.monotonic() + STRAGGLER_S)
        finally:
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
        return offsets

    async def _one(self, node: NodeSpec) -> float | None:
        """The node's clock minus this process's monotonic clock at its answer (a lower
        bound: the node read its clock before answering); None if it did not tell."""
        try:
            doc = await self._nodes.health(node, PROBE_TIMEOUT_S)
            at = time.monotonic()
            told = float(doc["now"])
        except (StorageError, KeyError, TypeError, ValueError):
            return None
        return told - at if math.isfinite(told) else None
