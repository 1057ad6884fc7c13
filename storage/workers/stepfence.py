"""A leased worker's steps bounded by its lease: none starts once the lease has run out, and
one still running when it runs out is cancelled.

The runner renews a worker's lease beside the worker's loop (`runner.WorkerRunner._hold`).
A gateway paused (SIGSTOP, a frozen VM) or starved past the lease's TTL resumed with its
step going on and started more, while another gateway already held the lease and ran the same
worker, until its own renewal came back refused. With the lease's end as the step's deadline
(moved on at each renewal), a resumed process's event loop fires that deadline before the
step gets any answer that arrived during the pause, so the step is cancelled at the await it
was in, and the next one does not start.

Cancelling the step's task does not reach everything it set going: a sub-task woken in the
same loop iteration (repair_batch's rebuilds), a request sent before the pause, a step whose
`asyncio.wait_for` swallowed the cancellation (Python 3.11). So each step also runs under its
lease's store-side fence (storage/metadata/fence.py): its commits, and its sub-tasks', compare
the lease and are refused once another process holds it; none is sent once it ran out here.
A step that returns although its deadline passed (a swallowed cancellation) ends the loop too.

The deadline's timer runs on the event loop's clock (CLOCK_MONOTONIC), which stops while the
host is suspended: a timer set for the lease's end fired, after a resume, as late as the
suspend was long. So the step's deadline is also checked against the lease clock
(storage/leaseclock.py, CLOCK_BOOTTIME) every `CHECK_S` of the loop's clock: a step resumed
past its lease's end is cancelled within `CHECK_S`, not a whole suspend later.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from storage import leaseclock
from storage.leases import Lease
from storage.metadata.fence import FENCE, Fence


class LeaseRanOut(Exception):
    """The worker's lease ran out before or during a step: stop running it here."""


class StepFence:
    """The deadline of the step running under `lease` (one step at a time)."""

    CHECK_S = 1.0  # how often a running step's deadline is re-read from the lease clock

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self._timeout: asyncio.Timeout | None = None
        self._check: asyncio.TimerHandle | None = None

    def _end(self) -> float:
        """The lease's end on the event loop's clock (converted from the boot clock now:
        a suspend during the step delays this timer, the loop's clock stopped, but not the
        lease's own `valid()`, which the step's commits check before they are sent)."""
        left = self.lease.renewed_at + self.lease.ttl_s - leaseclock.now()
        return asyncio.get_running_loop().time() + left

    def renewed(self) -> None:
        """The lease was renewed: the running step may go on until its new end."""
        if self._timeout is not None and not self._timeout.expired():
            self._timeout.reschedule(self._end())

    def _recheck(self) -> None:
        """Re-read the step's end from the lease clock (a suspend moved it nearer, or past:
        a deadline already past fires at once) and check again in `CHECK_S`."""
        self._check = None
        if self._timeout is None or self._timeout.expired():
            return
        self._timeout.reschedule(self._end())
        self._check = asyncio.get_running_loop().call_later(self.CHECK_S, self._recheck)

    @asynccontextmanager
    async def step(self) -> AsyncIterator[None]:
        """Run one step within the lease; LeaseRanOut when it had run out or ran out in it."""
        if not self.lease.valid():
            raise LeaseRanOut(self.lease.name)
        timeout = asyncio.timeout_at(self._end())
        fence = Fence(self.lease, self.lease.fence_key, self.lease.fence_revision)
        token = FENCE.set(fence)  # copied into every task the step creates
        try:
            async with timeout:
                self._timeout = timeout
                self._check = asyncio.get_running_loop().call_later(self.CHECK_S,
                                                                    self._recheck)
                yield
        except TimeoutError:
            if timeout.expired():
                raise LeaseRanOut(self.lease.name) from None
            raise  # the step's own
        finally:
            fence.active = False  # a task it left behind commits unfenced (not as this step)
            FENCE.reset(token)
            self._timeout = None
            if self._check is not None:
                self._check.cancel()
                self._check = None
        if timeout.expired():  # its cancellation was swallowed (asyncio.wait_for on 3.11)
            raise LeaseRanOut(self.lease.name)
