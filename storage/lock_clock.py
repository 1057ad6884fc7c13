"""The time Object Lock retention is judged by: this process's clock, but never ahead of the
storage nodes' clocks.

A retention ends at a wall-clock instant, and each gateway used its own clock to decide that
it had: a gateway whose clock ran fast let a locked version be deleted (or its retention
shortened, or its tenant shredded) early. AWS judges it by S3's clock; here no one clock
is S3's, so a lock ends only once this process's clock AND the clock of most storage nodes
say so: `now()` is the smaller of `time.time()` and the median of the nodes' clocks (their
health documents' `now`, each a lower bound of that node's clock when its answer arrived,
carried forward with this process's monotonic clock, which a step of the wall clock does not
move). One fast clock, the gateway's or a few nodes', cannot end a lock early; a slow one
only keeps it a little longer (safe, where early is not). The nodes are asked again every
`REFRESH_S`, and only by a caller that judges a lock (a bucket with Object Lock).

When fewer than half of the nodes answer, the time cannot be vouched for: `ClockUnverified`
(503 to S3 clients, retried by SDKs), never the process's own clock alone.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable, Sequence

from storage.config import NodeSpec
from storage.errors import StorageError
from storage.shards.transport import NodeTransport

REFRESH_S = 30.0  # the nodes' clocks are read again after this long
PROBE_TIMEOUT_S = 2.0
FAILED_HOLD_S = 1.0  # a failed reading answers callers this long (no probe round each)


class ClockUnverified(StorageError):
    """Too few storage nodes told their time to judge an Object Lock retention now."""


class LockClock:
    """`now()`: the time Object Lock expiry is judged by (see the module docstring)."""

    def __init__(self, nodes: NodeTransport, cluster: Callable[[], Sequence[NodeSpec]]) -> None:
        self._nodes = nodes
        self._cluster = cluster
        self._base: float | None = None  # the nodes' median clock minus the monotonic clock
        self._read_at = 0.0  # monotonic time of that reading
        self._reading: asyncio.Lock | None = None
        self._failed: tuple[float, ClockUnverified] | None = None  # (monotonic, why)

    async def now(self) -> float:
        """The smaller of this process's clock and the nodes' (ClockUnverified if most
        nodes do not answer when they must be read)."""
        if self._base is None or time.monotonic() - self._read_at > REFRESH_S:
            if self._reading is None:
                self._reading = asyncio.Lock()
            async with self._reading:  # one reading for every caller waiting on it
                if self._base is None or time.monotonic() - self._read_at > REFRESH_S:
                    if self._failed and time.monotonic() - self._failed[0] < FAILED_HOLD_S:
                        raise ClockUnverified(str(self._failed[1]))  # (callers queued on it)
                    try:
                        await self._read()
                    except ClockUnverified as exc:
                        self._failed = (time.monotonic(), exc)
                        raise
        assert self._base is not None
        return min(time.time(), self._base + time.monotonic())

    async def _read(self) -> None:
        nodes = list(self._cluster())
        started = time.monotonic()
        answers = await asyncio.gather(*(self._one(n) for n in nodes))
        offsets = [a for a in answers if a is not None]
        if not nodes or len(offsets) <= len(nodes) // 2:
            raise ClockUnverified(f"{len(offsets)} of {len(nodes)} storage nodes told their "
                                  "time: an Object Lock retention cannot be judged now")
        self._base, self._read_at = statistics.median_low(offsets), started

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
