"""The restore worker: makes restored copies whose tier latency has passed, retires expired
ones (see storage/archive.py).

On etcd (where every idle poll is a Raft read) a watch on both queues wakes it when a job
or a restored copy is queued or changed, and otherwise it sleeps until the earliest entry
falls due (at most `WATCHED_MAX_S`), instead of reading both queues every second.
"""

from __future__ import annotations

import time

from storage.archive import ArchiveService
from storage.keyspace import RESTORE_EXPIRY, RESTORE_QUEUE, space
from storage.workers import WorkerState

WATCHED_MAX_S = 30.0  # the longest sleep of a watched, idle worker (a bound on a missed wake)


class RestoreWorker:
    name = "restore"
    idle_s = 1.0  # the runner's pause after an idle step (and, watched, between two wakes)
    min_pause_s = 1.0
    # on etcd, a change under either queue wakes it (storage/workers/wakes.py)
    wake_prefixes = (space(RESTORE_QUEUE)[0], space(RESTORE_EXPIRY)[0])

    def __init__(self, archive: ArchiveService) -> None:
        self._archive = archive

    @property
    def watched_idle_s(self) -> float:
        """The idle pause when the queues wake it: until the next entry falls due."""
        due = self._archive.next_work_ns()
        if due is None:
            return WATCHED_MAX_S
        return min(WATCHED_MAX_S, max(0.0, (due - time.time_ns()) / 1e9))

    async def step(self) -> WorkerState:
        done = await self._archive.complete_due_restores()
        expired = await self._archive.expire_restored()
        return WorkerState.BUSY if done or expired else WorkerState.IDLE
