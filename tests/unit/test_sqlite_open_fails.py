"""`SqliteStore.open` on a file it cannot open (block21): it raises, and what it opened by
then is closed. It used to keep its two thread pools (the writer's thread running) and the
connections it had made for as long as anything held the error (a logged traceback, a retry
loop's last error): a daemon retrying its start leaked a thread and descriptors per try."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from storage.metadata.sqlite import SqliteStore


def _sqlite_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("sqlite-"))


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("what", ["not sqlite", "a directory"])
async def test_a_failed_open_closes_what_it_opened(tmp_path: Path, what: str) -> None:
    path = tmp_path / "meta.db"
    if what == "not sqlite":
        path.write_bytes(b"this is not an SQLite database file, just bytes\n" * 200)
    else:
        path.mkdir()
    threads, fds = _sqlite_threads(), _fds()
    errors = []  # kept, as a logger or a retry loop keeps the last error
    for _ in range(3):
        with pytest.raises(sqlite3.Error) as info:
            await SqliteStore.open(path)
        errors.append(info.value)
    assert _sqlite_threads() == threads
    assert _fds() == fds
    assert not list(tmp_path.glob("*gen"))  # no counter file was left either
