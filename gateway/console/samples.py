"""An in-process ring buffer of the gateway's S3 throughput and latency, for the console's
charts of the last hour (no Prometheus server needed).

Every `interval_s` the sampler reads this gateway's own counters (`gateway.metrics.Metrics`:
requests, bytes in/out, the latency histogram) and keeps the rates since the previous reading:
requests/s, errors/s (5xx), bytes in/out per second, mean and p95 latency. A reading of the
partial interval up to now is added to each answer, so a chart has a point at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway.metrics import LATENCY_BUCKETS, Metrics

INTERVAL_S = 10.0
KEEP = 360  # an hour of 10-second samples


@dataclass
class Totals:
    """Cumulative counter values at one instant."""

    t: float
    requests: float = 0.0
    errors: float = 0.0
    bytes_in: float = 0.0
    bytes_out: float = 0.0
    latency_sum: float = 0.0
    latency_count: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * (len(LATENCY_BUCKETS) + 1))


def read_totals(m: Metrics, now: float | None = None) -> Totals:
    """The gateway's counters summed over operations and statuses."""
    tot = Totals(t=time.time() if now is None else now)
    for fam in m.requests.collect():
        for s in fam.samples:
            if s.name.endswith("_total"):
                tot.requests += s.value
                if s.labels.get("status", "").startswith("5"):
                    tot.errors += s.value
    for counter, attr in ((m.bytes_in, "bytes_in"), (m.bytes_out, "bytes_out")):
        for fam in counter.collect():
            for s in fam.samples:
                if s.name.endswith("_total"):
                    setattr(tot, attr, getattr(tot, attr) + s.value)
    bounds = [*(float(b) for b in LATENCY_BUCKETS), float("inf")]
    for fam in m.latency.collect():
        for s in fam.samples:
            if s.name.endswith("_sum"):
                tot.latency_sum += s.value
            elif s.name.endswith("_count"):
                tot.latency_count += s.value
            elif s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                tot.buckets[bounds.index(le)] += s.value
    return tot


def rates(a: Totals, b: Totals) -> dict[str, float]:
    """Per-second rates and latencies between two readings."""
    dt = max(1e-6, b.t - a.t)
    n = b.latency_count - a.latency_count
    out = {"t": round(b.t, 3), "seconds": round(dt, 3),
           "requests_s": (b.requests - a.requests) / dt,
           "errors_s": (b.errors - a.errors) / dt,
           "bytes_in_s": (b.bytes_in - a.bytes_in) / dt,
           "bytes_out_s": (b.bytes_out - a.bytes_out) / dt,
           "latency_mean_ms": 1000 * (b.latency_sum - a.latency_sum) / n if n > 0 else None,
           "latency_p95_ms": None}
    if n > 0:
        want = 0.95 * n
        for i, bound in enumerate(LATENCY_BUCKETS):
            if b.buckets[i] - a.buckets[i] >= want:  # cumulative buckets: first that holds 95%
                out["latency_p95_ms"] = 1000 * bound
                break
        else:
            out["latency_p95_ms"] = 1000 * LATENCY_BUCKETS[-1]
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}


class Sampler:
    """Takes a reading every `interval_s` and keeps the last `keep` rates."""

    def __init__(self, metrics: Metrics, interval_s: float = INTERVAL_S, keep: int = KEEP) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.samples: deque[dict[str, Any]] = deque(maxlen=keep)
        self._last = read_totals(metrics)
        self._task: asyncio.Task[None] | None = None

    def tick(self, now: float | None = None) -> None:
        cur = read_totals(self.metrics, now)
        self.samples.append(rates(self._last, cur))
        self._last = cur

    def series(self) -> dict[str, Any]:
        """The kept samples plus the partial interval up to now."""
        now = read_totals(self.metrics)
        tail = [rates(self._last, now)] if now.t - self._last.t >= 0.5 else []
        return {"interval_s": self.interval_s, "samples": [*self.samples, *tail]}

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.tick()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
