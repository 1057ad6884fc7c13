"""A leased worker's steps bounded by its lease: none starts once the lease has run out, and
one still running when it runs out is cancelled.

The runner renews a worker's lease beside the worker's loop (`runner.WorkerRunner._hold`).
A gateway paused (SIGSTOP, a frozen VM) or starved past the lease's TTL resumed with its
step going on and started more, while another gateway already held the lease and ran the same
worker, until its own renewal came back refused. With the lease's end as the step's deadline
(moved on at each renewal), a resumed process's event loop fires that deadline before the
step gets any answer that arrived during the pause, so the step is cancelled at the await it
was in, and the next one does not start. A request the step had sent before the pause may
still apply: no store-side fence covers it, the workers' own compare-and-swaps do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from storage.leases import Lease


class LeaseRanOut(Exception):
    """The worker's lease ran out before or during a step: stop running it here."""


class StepFence:
    """The deadline of the step running under `lease` (one step at a time)."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self._timeout: asyncio.Timeout | None = None

    def _end(self) -> float:
        """The lease's end on the event loop's clock."""
        left = self.lease.renewed_at + self.lease.ttl_s - time.monotonic()
        return asyncio.get_running_loop().time() + left

    def renewed(self) -> None:
        """The lease was renewed: the running step may go on until its new end."""
        if self._timeout is not None and not self._timeout.expired():
            self._timeout.reschedule(self._end())

    @asynccontextmanager
    async def step(self) -> AsyncIterator[None]:
        """Run one step within the lease; LeaseRanOut when it had run out or ran out in it."""
        if not self.lease.valid():
            raise LeaseRanOut(self.lease.name)
        timeout = asyncio.timeout_at(self._end())
        try:
            async with timeout:
                self._timeout = timeout
                yield
        except TimeoutError:
            if timeout.expired():
                raise LeaseRanOut(self.lease.name) from None
            raise  # the step's own
        finally:
            self._timeout = None
