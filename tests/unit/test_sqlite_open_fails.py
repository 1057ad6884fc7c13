"""`SqliteStore.open` on a file it cannot open (block21): it raises, and what it opened by
then is closed. It used to keep its two thread pools (the writer's thread running) and the
connections it had made for as long as anything held the error (a logged traceback, a retry
loop's last error): a daemon retrying its start leaked a thread and descriptors per try."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from storage.metadata.sqlite import SqliteStore


def _sqlite_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("sqlite-")}


def _fds_on(path: Path) -> list[str]:
    """This process's descriptors open on `path` or beside it (its -wal, -shm, counters):
    only these, so another test's store collected meanwhile cannot change the count."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [f for f in held if f.startswith(str(path.parent))]


@pytest.mark.parametrize("what", ["not sqlite", "a directory"])
async def test_a_failed_open_closes_what_it_opened(tmp_path: Path, what: str) -> None:
    path = tmp_path / "meta.db"
    if what == "not sqlite":
        path.write_bytes(b"this is not an SQLite database file, just bytes\n" * 200)
    else:
        path.mkdir()
    threads = _sqlite_threads()
    errors = []  # kept, as a logger or a retry loop keeps the last error
    for _ in range(3):
        with pytest.raises(sqlite3.Error) as info:
            await SqliteStore.open(path)
        errors.append(info.value)
    assert not _sqlite_threads() - threads
    assert not _fds_on(path)
    assert not list(tmp_path.glob("*gen"))  # no counter file was left either


async def test_a_cancelled_open_neither_stalls_the_loop_nor_leaks(tmp_path: Path) -> None:
    """review21d: an open cancelled while another process holds the lock (its thread waits
    out the busy timeout) closed its connections from under that thread and then waited for
    it on the event loop (`shutdown(wait=True)`): the loop stalled up to BUSY_TIMEOUT_S.
    Now the cancel returns while the thread still waits, and once the lock goes, the thread
    closes what it opened and ends."""
    import asyncio

    path = tmp_path / "meta.db"
    await (await SqliteStore.open(path)).close()
    before = set(threading.enumerate())
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        task = asyncio.ensure_future(SqliteStore.open(path))
        while not any(t.name.startswith("sqlite-w") for t in set(threading.enumerate()) - before):
            await asyncio.sleep(0.01)  # its thread started (and waits on the lock)
        task.cancel()
        await asyncio.wait([task])
        left = [t for t in set(threading.enumerate()) - before if t.name.startswith("sqlite-w")]
        assert left and left[0].is_alive()  # not waited for on the loop
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    for t in left:  # it ends at once now; the bound only keeps a leaked thread from hanging
        await asyncio.to_thread(t.join, 60.0)
        assert not t.is_alive()
    assert not _fds_on(path)
