"""The restore worker's retry times (`ArchiveService._retry_at`) are pruned once their job
is no longer queued: a stale past retry time kept `next_work_ns` due for ever, so the
worker woken by watches went back to polling every second. A job declined because its
version changed under the copy (a transition moved the data) stays queued and due: it gets a
retry time now, or that worker would sleep its longest pause (30 s) before trying again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ops.localcluster import default_config
from storage.archive import ArchiveService
from storage.config import load_config
from storage.keyspace import RESTORE_QUEUE, archive_job_key
from storage.metadata import Item
from storage.metadata.sqlite import SqliteStore
from storage.records import pack as pack_record


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


def test_a_job_declined_by_a_concurrent_change_is_due_again_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tessera.toml").write_text(default_config(tmp_path, 9000, 9100, 9001))
    cfg = load_config(tmp_path / "tessera.toml")

    async def main() -> tuple[int | None, list[bytes]]:
        meta = await SqliteStore.open(tmp_path / "m.db")
        try:
            svc = ArchiveService(cfg, meta, None, None)  # type: ignore[arg-type]
            job = archive_job_key(RESTORE_QUEUE, time.time_ns() - 1, "b", "k", "null")
            await meta.put(job, pack_record({}))
            tried: list[bytes] = []

            async def declined(item: Item) -> bool:  # the version changed: copy discarded
                tried.append(item.key)
                return False

            monkeypatch.setattr(svc, "_complete", declined)
            assert await svc.complete_due_restores() == 0
            due = svc.next_work_ns()
            assert await svc.complete_due_restores() == 0  # tried again, not held back
            return due, tried
        finally:
            await meta.close()

    before = time.time_ns()
    due, tried = asyncio.run(main())
    assert due is not None and due <= time.time_ns() and due >= before - 10**9
    assert len(tried) == 2
