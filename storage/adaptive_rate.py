"""The busy rate of background bytes, adapted to how well clients are being served.

While S3 clients are active, repair of safe stripes and rebalancing used to move a fixed
`busy_rate_bytes_s` (4 MiB/s): hours to full redundancy on a busy cluster even when the
machine had capacity to spare. `AdaptiveRate` starts at that floor and, like TCP's
congestion window, grows it (x`GROW` per `ADJUST_S`) while the event loop's lag stays within
`lag_bound_s`, and halves it (never below the floor) as soon as the lag exceeds the bound.
The lag judged is the mean of an interval's samples, not its worst: on a machine short of
CPU any one sample may include the OS scheduler's delay, and a single outlier would hold
the rate at the floor (measured: it did, at load average 20-30).
The event loop's lag is what every client request of this process waits for before its own
work runs, so the bound is a bound on the latency repair adds to clients here; the other
gateway worker's clients share the same CPUs and suffer roughly alike.

The lag is sampled by the throttled worker itself (`probe`: the time one `sleep(0)` takes to
come back, i.e. how long the loop's ready callbacks made it wait), at most every `PROBE_S`,
so no extra task runs and nothing is measured while no background work is paced. A bound
of 0 turns the adaptation off (the fixed busy rate of before). An unlimited idle rate
(`rate_bytes_s = 0`) still caps the busy rate at `UNLIMITED_CEILING`, so a long calm never
grows it past what a few halvings bring back. Paced work that resumes after `RESTART_S`
without a probe (clients came back after a pause) starts again from the floor, as TCP's
window does after an idle period.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

ADJUST_S = 0.5  # the rate changes at most this often
PROBE_S = 0.05  # the lag is sampled at most this often
GROW = 1.5  # rate x this per calm interval (4 MiB/s reaches 200 MiB/s in about 5 s)
SHRINK = 0.5  # rate x this per interval that saw the lag above the bound
DEFAULT_LAG_BOUND_S = 0.025
UNLIMITED_CEILING = float(1 << 30)  # the busy rate's cap when the idle rate is unlimited
RESTART_S = 2.0  # paced work resuming after this long without a probe starts at the floor


class AdaptiveRate:
    """An AIMD-style busy rate between `floor` and `ceiling` bytes/s (see the module doc)."""

    def __init__(self, floor: float, ceiling: float, lag_bound_s: float = DEFAULT_LAG_BOUND_S,
                 clock: Callable[[], float] = time.monotonic,
                 yield_: Callable[[], Awaitable[object]] = lambda: asyncio.sleep(0)) -> None:
        self.floor = max(0.0, floor)
        self.ceiling = ceiling if ceiling > 0 else max(UNLIMITED_CEILING, self.floor)
        self.lag_bound_s = max(0.0, lag_bound_s)
        self.rate = self.floor
        self.lag_s = 0.0  # the mean lag of the last adjustment interval
        self._sum = 0.0  # ...and the current one's samples
        self._n = 0
        self._clock = clock
        self._yield = yield_
        self._next_probe = 0.0
        self._last_probe = -RESTART_S  # when the last lag sample was taken
        self._next_adjust = clock() + ADJUST_S

    @property
    def enabled(self) -> bool:
        return self.lag_bound_s > 0 and self.floor > 0 and self.ceiling > self.floor

    def current(self) -> float:
        """The busy rate in force now (the floor when adaptation is off)."""
        return min(self.rate, self.ceiling) if self.enabled else self.floor

    def observe(self, lag_s: float) -> None:
        """Record one lag sample; at most once per ADJUST_S, move the rate."""
        self._sum += lag_s
        self._n += 1
        now = self._clock()
        if now < self._next_adjust:
            return
        self._next_adjust = now + ADJUST_S
        self.lag_s, self._sum, self._n = self._sum / self._n, 0.0, 0
        if self.lag_s > self.lag_bound_s:
            self.rate = max(self.floor, self.rate * SHRINK)
        else:
            self.rate = min(self.ceiling, max(self.floor, self.rate * GROW))

    async def probe(self) -> None:
        """Sample the event loop's lag now if the last sample is older than PROBE_S."""
        if not self.enabled:
            return
        t = self._clock()
        if t < self._next_probe:
            return
        self._next_probe = t + PROBE_S
        if t - self._last_probe > RESTART_S:  # paced work resumes: from the floor again
            self.rate, self._sum, self._n = self.floor, 0.0, 0
            self._next_adjust = t + ADJUST_S
        self._last_probe = t
        await self._yield()
        self.observe(self._clock() - t)

    def snapshot(self) -> dict[str, float]:
        """For `tessera status`: the rate in force while busy, its bounds, the lag."""
        return {"busy_rate_now": round(self.current()), "busy_rate_floor": round(self.floor),
                "lag_bound_ms": round(self.lag_bound_s * 1000, 1),
                "loop_lag_ms": round(self.lag_s * 1000, 1)}


__all__ = ["ADJUST_S", "DEFAULT_LAG_BOUND_S", "GROW", "PROBE_S", "RESTART_S", "SHRINK",
           "UNLIMITED_CEILING", "AdaptiveRate"]
