"""Runs workers: each `step()` in a loop, pausing when idle, logging failures."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from storage.workers import Worker, WorkerState

if TYPE_CHECKING:
    from storage.cluster import Cluster

log = logging.getLogger("tessera.workers")


@dataclass
class WorkerRunner:
    idle_s: float = 1.0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, worker: Worker) -> None:
        self.tasks.append(asyncio.create_task(self._loop(worker), name=f"worker-{worker.name}"))

    async def _loop(self, worker: Worker) -> None:
        while True:
            try:
                state = await worker.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a worker must survive its own failures
                log.exception("worker %s failed a step", worker.name)
                state = WorkerState.IDLE
            if state is WorkerState.IDLE:
                await asyncio.sleep(self.idle_s)
            else:
                await asyncio.sleep(0)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def start_workers(cluster: Cluster) -> WorkerRunner:
    from storage.workers.gc import GarbageCollector

    runner = WorkerRunner()
    runner.start(GarbageCollector(cluster.meta, cluster.stripes))
    from storage.workers.repair import RepairSettings, RepairWorker

    runner.start(RepairWorker(cluster.cfg, cluster.meta, cluster.nodes, cluster.health,
                              cluster.cpu, RepairSettings.from_env()))
    from storage.keys_rotation import Rewrapper, ShredScheduler

    runner.start(Rewrapper(cluster.meta, cluster.tenants))
    runner.start(ShredScheduler(cluster.meta, cluster.tenants))
    from storage.lifecycle import archive_for, engine_for
    from storage.workers.lifecycle import LifecycleWorker
    from storage.workers.restore import RestoreWorker

    runner.start(RestoreWorker(archive_for(cluster)))
    runner.start(LifecycleWorker(engine_for(cluster), cluster.cfg.archive.lifecycle_interval_s))
    return runner
