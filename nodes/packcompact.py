"""A node's background pack compaction (issue 17 step 8): every `[packs] compact_interval_s`
the disk's sealed packs below `compact_ratio` live are compacted by the packs' committer
(`PackStore.compact`) at no more than `compact_rate_bytes_s`, client writes going between its
steps. Without it the space of deleted and replaced packed shards is never reclaimed. Each
run that ends, or finds the disk full, then punches the dead bodies of the packs it left (not
yet worth copying, or skipped on a full disk) in place (`nodes.packpunch`); a cancelled run
(the node stopping) does not wait for that."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from nodes.disk import DiskShardStore
from nodes.logs import JsonLog
from nodes.packreserve import is_disk_full
from storage.config import PackSettings


class Compactor:
    """Runs the disk's compaction now and then; `copied` and `runs` say what it did."""

    def __init__(self, store: DiskShardStore, settings: PackSettings, log: JsonLog) -> None:
        self.store, self.settings, self.log = store, settings, log
        self.copied = 0
        self.runs = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_once(self) -> int:
        """One compaction of every pack due now (the loop's step; tests call it directly)."""
        packs = self.store.packs
        if packs is None:
            return 0
        copied = 0
        try:
            if packs.candidates():
                copied = await packs.compact(pace=self.settings.compact_rate_bytes_s)
                self.copied += copied
                self.runs += 1
        except OSError as exc:  # a full disk: punching needs no room, so it still goes;
            if is_disk_full(exc):  # never after a cancel (a node stopping must not wait
                try:  # for a punch pass: review21f F2) or a failing disk
                    await self._punch()
                except Exception as punch_exc:  # compaction's own error is what is raised
                    if self.log is not None:
                        self.log.warning("pack punch after a full disk failed",
                                         error=repr(punch_exc)[:500])
            raise
        await self._punch()  # dead bodies of the packs left, given back in place
        return copied

    async def _punch(self) -> None:
        """Punch at compaction's pace: a background job's disk share stays small."""
        if self.store.packs is not None:
            await self.store.packs.punch(pace=self.settings.compact_rate_bytes_s)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.compact_interval_s)  # a period, not a wait
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - said, and tried again next period
                self.log.warning("pack compaction failed", error=repr(exc)[:500])


COMPACTOR: web.AppKey[Compactor] = web.AppKey("compactor", Compactor)


def install(app: web.Application, store: DiskShardStore, settings: PackSettings,
            log: JsonLog) -> None:
    """Start and stop a node's compactor with its application."""
    compactor = Compactor(store, settings, log)
    app[COMPACTOR] = compactor

    async def on_startup(_: web.Application) -> None:
        compactor.start()

    async def on_cleanup(_: web.Application) -> None:
        await compactor.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.insert(0, on_cleanup)  # before the store closes
