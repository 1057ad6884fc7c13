"""The SQLite metadata store while another process holds its lock (atkblock20): a mount
daemon stopped (SIGSTOP, a frozen cgroup) inside a commit, or a long commit on a loaded
disk. Past the busy timeout SQLite says "database is locked"; that is `Overloaded`, a
StorageError (S3 503 SlowDown; what the block daemon's lease renewal loop, journal appender
and folder retry), never a raw sqlite3 error: those loops caught StorageError only and
died on it, silently (the lease then went unrenewed and the volume could be taken over
from a live writer), and `tessera volume mount` printed a traceback."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from storage.errors import Overloaded, StorageError
from storage.metadata import sqlite as sqlite_store
from storage.metadata.sqlite import SqliteStore


async def test_a_lock_held_past_the_busy_timeout_is_overloaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2, raising=False)  # 0.2 s, not 5
    db = tmp_path / "meta.db"
    store = await SqliteStore.open(db)
    await store.put(b"k", b"1")
    other = sqlite3.connect(db, isolation_level=None)  # another process, inside a commit
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Overloaded, match="metadata store is busy"):
            await store.put(b"k", b"2")
        with pytest.raises(StorageError, match="metadata store is busy"):
            await SqliteStore.open(db)  # a command's open writes its schema
        item = await store.get(b"k")  # WAL readers are not blocked
        assert item is not None and item.value == b"1"
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store.put(b"k", b"3")  # the same store commits again once the lock is free
    item = await store.get(b"k")
    assert item is not None and item.value == b"3"
    await store.close()


async def test_a_volume_writer_keeps_renewing_its_lease_through_a_lock_held_that_long(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attached writer's renewal loop meets the lock (its renewal's commit waits the
    busy timeout) and goes on renewing once it is free. On a cluster, the same 7 s lock
    killed an idle mount's renewals for good: a second mount took the volume over a ttl
    later and the first mount's next fsync was EIO."""
    from tests.unit.test_volume_journal import Sim

    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2, raising=False)
    sim = Sim(tmp_path)
    svc = await sim.open()
    try:
        await svc.create("t", "v", 1 << 20)
        h = await svc.open("t", "v", holder="w", lease_ttl_s=0.6)  # renews every 0.2 s
        refused: list[BaseException] = []
        txn = svc.meta.txn

        async def watched(t):  # type: ignore[no-untyped-def]
            try:
                return await txn(t)
            except BaseException as exc:
                refused.append(exc)
                raise
        svc.meta.txn = watched  # type: ignore[method-assign]
        other = sqlite3.connect(tmp_path / "meta.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            await wait_until(lambda: bool(refused))  # a renewal met the lock
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert isinstance(refused[0], Overloaded), refused[0]
        renewed = h._lease_rev
        await wait_until(lambda: h._lease_rev != renewed)  # renewing again
        assert h._renewer is not None and not h._renewer.done()
        await h.close()
    finally:
        await sim.close()


async def wait_until(cond, limit_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Until `cond()` holds (checked every 10 ms; a deadline, not a sleep to sync)."""
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)
