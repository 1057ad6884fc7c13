"""The lifecycle worker: one pass of the bucket lifecycle rules every `lifecycle_interval_s`."""

from __future__ import annotations

import dataclasses
import logging
import time

from storage.lifecycle import LifecycleEngine, LifecycleReport
from storage.telemetry import LIFECYCLE
from storage.workers import WorkerState

log = logging.getLogger("tessera.lifecycle")


class LifecycleWorker:
    name = "lifecycle"

    def __init__(self, engine: LifecycleEngine, interval_s: float) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._next = 0.0
        self.last: LifecycleReport | None = None

    async def step(self) -> WorkerState:
        now = time.monotonic()
        if now < self._next:
            return WorkerState.IDLE
        self._next = now + self._interval_s
        self.last = await self._engine.run_once()
        LIFECYCLE.add("passes")
        for kind, count in dataclasses.asdict(self.last).items():
            if kind != "buckets" and count:
                LIFECYCLE.add(kind, count)
        if self.last.errors:
            log.warning("lifecycle pass: %s", self.last)
        return WorkerState.IDLE
