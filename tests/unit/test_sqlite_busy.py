"""The SQLite metadata store while another process holds its lock (atkblock20): a mount
daemon stopped (SIGSTOP, a frozen cgroup) inside a commit, or a long commit on a loaded
disk. Past the busy timeout SQLite says "database is locked"; that is `Overloaded`, a
StorageError (S3 503 SlowDown; what the block daemon's lease renewal loop, journal appender
and folder retry), never a raw sqlite3 error: those loops caught StorageError only and
died on it, silently (the lease then went unrenewed and the volume could be taken over
from a live writer), and `tessera volume mount` printed a traceback."""

from __future__ import annotations

import sqlite3
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
