"""Dropped access-log records are counted only once their batches are deleted
(`AccessLogDelivery._dropped`, storage/workers/accesslog.py).

Counted before the delete, a reader of the count (the metric, a test) could still find the
batches staged, and a delete that failed counted them again at the next attempt. Real
`SqliteStore`; its deletes are held on an event, or made to fail, to show the order.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from storage.buckets import BucketService
from storage.keyspace import access_log_key
from storage.metadata import Txn
from storage.metadata.sqlite import SqliteStore
from storage.records import pack
from storage.workers.accesslog import AccessLogDelivery

BATCH = {"logging": {"target_bucket": "gone"}, "lines": ["one line"], "source_tenant": "t"}


class HeldDeletes:
    """The store, with every delete held until `release` is set (or failing, `fail`)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.deleting = asyncio.Event()
        self.release = asyncio.Event()
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def txn(self, txn: Txn) -> bool:
        if txn.deletes:
            self.deleting.set()
            if self.fail:
                raise OSError("delete failed")
            await self.release.wait()
        return await self._store.txn(txn)


async def _delivery(tmp_path: Path) -> tuple[AccessLogDelivery, HeldDeletes, bytes]:
    store = await SqliteStore.open(tmp_path / "m.db")
    key = access_log_key("src", time.time_ns() - 10**10, "u")  # due: staged 10 s ago
    await store.put(key, pack(BATCH))
    meta = HeldDeletes(store)
    cluster = SimpleNamespace(meta=meta, buckets=BucketService(store, "us-east-1"))
    return AccessLogDelivery(cluster, 2.0), meta, key  # type: ignore[arg-type]


async def test_records_for_a_gone_target_are_counted_once_deleted(tmp_path: Path) -> None:
    delivery, meta, key = await _delivery(tmp_path)
    try:
        step = asyncio.create_task(delivery.step())
        await meta.deleting.wait()
        assert delivery.stats.dropped == 0  # the batch is still staged
        meta.release.set()
        await step
        assert delivery.stats.dropped == 1 and await meta.get(key) is None
    finally:
        await meta.close()


async def test_a_failed_delete_counts_nothing(tmp_path: Path) -> None:
    delivery, meta, key = await _delivery(tmp_path)
    meta.fail = True
    try:
        await delivery.step()  # the failure is kept for a retry
        assert delivery.stats.dropped == 0 and await meta.get(key) is not None
    finally:
        await meta.close()
