"""The restore worker: makes restored copies whose tier latency has passed, retires expired
ones (see storage/archive.py)."""

from __future__ import annotations

from storage.archive import ArchiveService
from storage.workers import WorkerState


class RestoreWorker:
    name = "restore"

    def __init__(self, archive: ArchiveService) -> None:
        self._archive = archive

    async def step(self) -> WorkerState:
        done = await self._archive.complete_due_restores()
        expired = await self._archive.expire_restored()
        return WorkerState.BUSY if done or expired else WorkerState.IDLE
