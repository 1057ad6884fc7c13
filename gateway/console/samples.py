"""An in-process ring buffer of the gateway's S3 throughput and latency, for the console's
charts of the last hour (no Prometheus server needed).

Every `interval_s` the sampler reads this gateway's own counters from metrics text (the
`SAMPLE_NAMES` samples of `/metrics`, rendered by each of the gateway's worker processes and
summed: requests, bytes in/out, the latency histogram) and keeps the rates since the
previous reading:
requests/s, errors/s (5xx), bytes in/out per second, mean and p95 latency. A reading of the
partial interval up to now is added to each answer, so a chart has a point at once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.metrics import LATENCY_BUCKETS
from storage.workers import WorkerState

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


# The sample names the charts read: a worker renders only these for the sampler
# (`Metrics.render(SAMPLE_NAMES)`), not its whole exposition.
SAMPLE_NAMES = ("tessera_s3_requests_total", "tessera_s3_bytes_in_total",
                "tessera_s3_bytes_out_total", "tessera_s3_request_seconds_sum",
                "tessera_s3_request_seconds_count", "tessera_s3_request_seconds_bucket")
_BOUNDS = [*(float(b) for b in LATENCY_BUCKETS), float("inf")]


def read_totals(text: bytes, now: float | None = None) -> Totals:
    """The gateway's S3 counters, summed over operations, statuses and worker processes, from
    metrics text: one exposition, or several worker's concatenated (each line is added).

    A line scan of only the `tessera_s3_` samples: the full text parser cost the idle
    gateway more than anything else it did (`tests/unit/test_console_sessions.py`)."""
    tot = Totals(t=time.time() if now is None else now)
    for line in text.decode().splitlines():
        if not line.startswith("tessera_s3_"):
            continue
        brace = line.find("{")
        if brace < 0:
            name, _, rest = line.partition(" ")
            labels = ""
        else:
            close = line.rfind("}")
            name, labels, rest = line[:brace], line[brace + 1:close], line[close + 1:]
        value = float(rest.split()[0])
        if name == "tessera_s3_requests_total":
            tot.requests += value
            if 'status="5' in labels:
                tot.errors += value
        elif name == "tessera_s3_bytes_in_total":
            tot.bytes_in += value
        elif name == "tessera_s3_bytes_out_total":
            tot.bytes_out += value
        elif name == "tessera_s3_request_seconds_sum":
            tot.latency_sum += value
        elif name == "tessera_s3_request_seconds_count":
            tot.latency_count += value
        elif name == "tessera_s3_request_seconds_bucket":
            at = labels.find('le="')
            le = float(labels[at + 4:labels.index('"', at + 4)]) if at >= 0 else None
            if le in _BOUNDS:
                tot.buckets[_BOUNDS.index(le)] += value
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

    name = "console-samples"

    def __init__(self, source: Callable[[], Awaitable[bytes]], interval_s: float = INTERVAL_S,
                 keep: int = KEEP) -> None:
        self.source = source
        self.interval_s = self.idle_s = interval_s
        self.samples: deque[dict[str, Any]] = deque(maxlen=keep)
        self._last: Totals | None = None

    async def tick(self, now: float | None = None) -> None:
        cur = read_totals(await self.source(), now)
        if self._last is not None:
            self.samples.append(rates(self._last, cur))
        self._last = cur

    async def series(self) -> dict[str, Any]:
        """The kept samples plus the partial interval up to now."""
        if self._last is None:
            await self.tick()
        assert self._last is not None
        now = read_totals(await self.source())
        tail = [rates(self._last, now)] if now.t - self._last.t >= 0.5 else []
        return {"interval_s": self.interval_s, "samples": [*self.samples, *tail]}

    async def step(self) -> WorkerState:
        """One reading, as a background step (run by a `WorkerRunner`, every `idle_s`)."""
        await self.tick()
        return WorkerState.IDLE
