"""Background scrubbing in the node: re-read every shard at a bounded rate, verify its frames.

A shard whose header or any frame fails its checksum is quarantined (moved aside with a
sidecar); the gateway's repair sweep polls `GET /v1/quarantine` and rebuilds it elsewhere.
The rate comes from the config's `[scrub]` (or `--scrub-rate`; 0 turns scrubbing off); after
a full pass the scrubber rests `[scrub] pause_s` seconds. Each shard costs at least
SHARD_FLOOR_BYTES of the rate (an open, a stat and a read cost CPU however small the shard):
a node holding millions of small shards scrubs a bounded number a second, not thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass

from aiohttp import web

from nodes.disk import DiskShardStore
from storage.config import ScrubSettings
from storage.errors import NotFound, ShardCorrupt

PAGE = 256
SHARD_FLOOR_BYTES = 64 * 1024  # of the byte rate charged per shard (8 MiB/s: 128 a second)


@dataclass
class ScrubProgress:
    enabled: bool = True
    rate_bytes_s: float = 0.0
    passes: int = 0
    pass_started: float = 0.0
    last_pass_end: float = 0.0
    shards_this_pass: int = 0
    bytes_this_pass: int = 0
    shards_total_at_start: int = 0
    shards_verified: int = 0
    bytes_verified: int = 0
    corrupt_found: int = 0


class Scrubber:
    """Walks the node's shards in id order, one verify per shard, paced to the byte rate."""

    def __init__(self, store: DiskShardStore, settings: ScrubSettings,
                 on_corrupt: object = None) -> None:
        self._store = store
        self.settings = settings
        self.progress = ScrubProgress(enabled=settings.rate_bytes_s > 0,
                                      rate_bytes_s=settings.rate_bytes_s)
        self._on_corrupt = on_corrupt
        self._task: asyncio.Task[None] | None = None
        self._sleep = asyncio.sleep  # (tests see the pacing without waiting for it)

    async def scrub_one(self, sid: str) -> int:
        """Verify one shard, quarantining it when damaged; returns the bytes read."""
        try:
            info = await self._store.stat(sid)
            bad, read = await self._store.verify(sid)
        except NotFound:
            return 0
        except ShardCorrupt as exc:
            await self._quarantine(sid, str(exc), exc.file)
            return 0
        if bad:
            await self._quarantine(sid, f"scrub: segments {bad[:8]} fail their checksums", read)
        size = int(info.get("size", 0))
        self.progress.shards_verified += 1
        self.progress.bytes_verified += size
        return size

    async def _quarantine(self, sid: str, reason: str, read: tuple[int, ...] | None) -> None:
        if await self._store.quarantine(sid, reason, read) is not None:
            self.progress.corrupt_found += 1
            if callable(self._on_corrupt):
                self._on_corrupt(sid, reason)

    async def run_pass(self) -> None:
        p = self.progress
        usage = await self._store.usage()
        p.pass_started, p.shards_this_pass, p.bytes_this_pass = time.time(), 0, 0
        p.shards_total_at_start = int(usage.get("shards", 0))
        start = time.monotonic()
        after = ""
        charged = 0
        while True:
            ids = await self._store.list(after, PAGE)
            for sid in ids:
                n = await self.scrub_one(sid)
                p.shards_this_pass += 1
                p.bytes_this_pass += n
                charged += max(n, SHARD_FLOOR_BYTES)
                if self.settings.rate_bytes_s <= 0:
                    await asyncio.sleep(0)
                    continue
                ahead = charged / self.settings.rate_bytes_s - (time.monotonic() - start)
                if ahead > 0:
                    await self._sleep(ahead)
            if len(ids) < PAGE:
                break
            after = ids[-1]
        p.passes += 1
        p.last_pass_end = time.time()

    async def _run(self) -> None:
        while True:
            await self.run_pass()
            await asyncio.sleep(self.settings.pause_s)

    def start(self) -> None:
        if self.progress.enabled:
            self._task = asyncio.create_task(self._run(), name="scrubber")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


SCRUBBER: web.AppKey[Scrubber] = web.AppKey("tessera_scrubber", Scrubber)


async def scrub_status(request: web.Request) -> web.Response:
    """The scrubber's progress, and `quarantined`: shards held in quarantine now, whoever
    found them (the scrubber, a read, a verify, the gateway's lie detection)."""
    scrubber = request.app[SCRUBBER]
    qdir = scrubber._store.quarantine_dir
    held = await asyncio.to_thread(lambda: sum(1 for _ in qdir.glob("*.json")))
    return web.json_response({**asdict(scrubber.progress), "quarantined": held})


def install(app: web.Application, store: DiskShardStore, settings: ScrubSettings) -> None:
    """Add the scrubber to a node application: started and stopped with it, `GET /v1/scrub`."""
    scrubber = Scrubber(store, settings)
    app[SCRUBBER] = scrubber
    app.router.add_get("/v1/scrub", scrub_status, name="scrub", allow_head=False)

    async def on_startup(_: web.Application) -> None:
        scrubber.start()

    async def on_cleanup(_: web.Application) -> None:
        await scrubber.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
