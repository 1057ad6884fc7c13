"""The restore worker's retry times (`ArchiveService._retry_at`) are pruned once their job
is no longer queued: a stale past retry time kept `next_work_ns` due for ever, so the
worker woken by watches went back to polling every second."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ops.localcluster import default_config
from storage.archive import ArchiveService
from storage.config import load_config
from storage.metadata.sqlite import SqliteStore


def test_a_retry_of_a_job_that_left_the_queue_is_forgotten(tmp_path: Path) -> None:
    (tmp_path / "tessera.toml").write_text(default_config(tmp_path, 9000, 9100, 9001))
    cfg = load_config(tmp_path / "tessera.toml")

    async def main() -> tuple[int | None, int | None]:
        meta = await SqliteStore.open(tmp_path / "m.db")
        try:
            svc = ArchiveService(cfg, meta, None, None)  # type: ignore[arg-type]
            svc._retry_at[b"a job deleted by its object's removal"] = time.time() - 1
            before = svc.next_work_ns()
            assert await svc.complete_due_restores() == 0
            return before, svc.next_work_ns()
        finally:
            await meta.close()

    before, after = asyncio.run(main())
    assert before is not None and after is None
