"""Pacing of background bytes (repair, rebalancing) that gives way to client traffic.

A token bucket whose rate is read at every refill: `max_rate` while clients are idle and
`busy_rate` while `busy()` says clients are active (`storage/activity.py`): a fixed small
rate, or, given an `AdaptiveRate` (`storage/adaptive_rate.py`), one that grows from that
floor while the event loop's lag stays within a bound and backs off when it does not. Callers may run into debt by one chunk; they then wait in
short slices, so a change of rate (clients arriving or leaving) takes effect within a slice
even for a caller that was already waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from storage.adaptive_rate import AdaptiveRate

BURST_S = 0.1  # credit banked while idle, in seconds of the current rate
SLICE_S = 0.05  # longest single wait: how fast a waiting caller sees a new rate


def _never_busy() -> bool:
    return False


class Throttle:
    """Caps a byte rate: `max_rate` normally, `busy_rate` while `busy()` (0 = no cap)."""

    def __init__(self, max_rate: float, busy_rate: float = 0.0,
                 busy: Callable[[], bool] = _never_busy,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 burst_s: float = BURST_S, slice_s: float = SLICE_S,
                 adaptive: AdaptiveRate | None = None) -> None:
        self.max_rate = max(0.0, max_rate)
        self.busy_rate = max(0.0, busy_rate)
        self.adaptive = adaptive  # the busy rate's controller (None: `busy_rate`, fixed)
        self._busy = busy
        self._clock = clock
        self._sleep = sleep
        self._burst_s = burst_s
        self._slice_s = slice_s
        self._tokens = 0.0
        self._last = clock()

    def busy(self) -> bool:
        """Whether clients are active now (the busy rate applies)."""
        return self.busy_rate > 0 and self._busy()

    def rate(self) -> float:
        """The rate in force now in bytes/s; 0 means unlimited."""
        if self.busy():
            busy = self.busy_rate if self.adaptive is None else self.adaptive.current()
            return min(self.max_rate, busy) if self.max_rate > 0 else busy
        return self.max_rate

    def _refill(self) -> float:
        now = self._clock()
        rate = self.rate()
        if rate <= 0:
            self._tokens = 0.0  # unlimited: no debt carries over to a later cap
        else:
            self._tokens = min(self._tokens + (now - self._last) * rate, rate * self._burst_s)
        self._last = now
        return rate

    async def consume(self, n: int) -> None:
        """Account `n` bytes, first waiting until earlier bytes are paid for."""
        if self.adaptive is not None and self.busy():
            await self.adaptive.probe()  # clients are served: how long do they wait?
        rate = self._refill()
        while rate > 0 and self._tokens < -1.0:  # within a byte counts as paid
            await self._sleep(min(self._slice_s, -self._tokens / rate))
            rate = self._refill()
        if rate > 0:
            self._tokens -= n


__all__ = ["BURST_S", "SLICE_S", "Throttle"]
