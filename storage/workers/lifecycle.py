"""The lifecycle worker: one pass of the bucket lifecycle rules every `lifecycle_interval_s`,
or every quarter of a lifecycle day when days are shorter (a test cluster's 2-second days), so
an action is applied within a fraction of a day of falling due.

On etcd (where every poll is a Raft read) the day length is not read every second: a watch
on its override record wakes the worker (`woken`), which then reads it; otherwise it is read
every `CLOCK_CHECK_WATCHED_S`, and the worker sleeps until its next pass."""

from __future__ import annotations

import dataclasses
import logging
import time

from storage.keyspace import system_key
from storage.lifecycle import LifecycleEngine, LifecycleReport
from storage.lifecycle_clock import DAY_SECONDS
from storage.telemetry import LIFECYCLE, LIFECYCLE_PASS_STARTED
from storage.workers import WorkerState

log = logging.getLogger("tessera.lifecycle")


class LifecycleWorker:
    name = "lifecycle"

    idle_s = 0.1  # the runner's pause between steps; a step before the next pass is free
    CLOCK_CHECK_S = 1.0  # a day length changed at runtime is noticed within this long
    CLOCK_CHECK_WATCHED_S = 60.0  # ...or, watched, this long when a wake-up was missed
    wake_prefix = system_key(DAY_SECONDS)  # on etcd, an override wakes it (workers/wakes.py)
    watched = False  # set by the runner when a watch wakes it

    def __init__(self, engine: LifecycleEngine, interval_s: float) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._started = self._next = self._check_at = 0.0
        self.last: LifecycleReport | None = None

    def _pause(self, day_s: float) -> float:
        return min(self._interval_s, day_s / 4)

    @property
    def watched_idle_s(self) -> float:
        """The idle pause when watched: until the next pass or clock check."""
        return max(0.0, min(self._next, self._check_at) - time.monotonic())

    def woken(self) -> None:
        """The day length's override changed: read it at the next step."""
        self._check_at = 0.0

    async def step(self) -> WorkerState:
        now = time.monotonic()
        if now >= self._check_at:  # `tessera config set lifecycle.day_seconds` took effect?
            self._check_at = now + (self.CLOCK_CHECK_WATCHED_S if self.watched
                                    else self.CLOCK_CHECK_S)
            day_s = await self._engine.clock.day_seconds()
            self._next = min(self._next, self._started + self._pause(day_s))
        if now < self._next:
            return WorkerState.IDLE
        self._started, self._next = now, now + self._interval_s  # also if the pass fails
        began = time.time()
        self.last = await self._engine.run_once()
        self._next = now + self._pause(self._engine.day_s)
        LIFECYCLE.add("passes")
        LIFECYCLE_PASS_STARTED.set(began)
        for kind, count in dataclasses.asdict(self.last).items():
            if kind != "buckets" and count:
                LIFECYCLE.add(kind, count)
        if self.last.errors:
            log.warning("lifecycle pass: %s", self.last)
        return WorkerState.IDLE
