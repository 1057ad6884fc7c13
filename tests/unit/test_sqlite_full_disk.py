"""The SQLite metadata store on a full disk (review16e finding 3): its "no space" errors,
SQLITE_FULL and SQLITE_IOERR_SHMSIZE (the WAL index <db>-shm cannot grow), are StorageFull
(a 503 to S3 clients, one line at a gateway's start), never a raw disk I/O error."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.errors import StorageFull
from storage.metadata.sqlite import SqliteStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a full disk is a tmpfs mount: "
                                "root only; CI runs as root")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted by the fixture's finalizer whatever the test did."""
    where = tmp_path / "fs"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(where)],
                   check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


def fill(path: Path) -> None:
    with contextlib.suppress(OSError), open(path / "filler", "wb") as fh:
        while True:
            fh.write(bytes(4096))
            fh.flush()


async def test_a_store_opened_on_a_full_disk_is_storage_full(small_fs: Path) -> None:
    # The first opener of a WAL database truncates <db>-shm and must grow it again: on a full
    # disk that is SQLITE_IOERR_SHMSIZE, which a restarted gateway got as a raw "disk I/O
    # error" traceback.
    db = small_fs / "meta.db"
    store = await SqliteStore.open(db)
    await store.put(b"k", b"v")
    await store.close()
    fill(small_fs)
    with pytest.raises(StorageFull, match=r"disk is full .*SQLITE_IOERR_SHMSIZE on "
                       rf"{db}\): free space on its file system"):
        await SqliteStore.open(db)


async def test_a_store_opened_beside_a_running_one_reads_and_refuses_writes(
        small_fs: Path) -> None:
    # A gateway worker restarted while another process holds the file open: SQLite can
    # read (the WAL index exists), so reads are served and writes are StorageFull.
    db = small_fs / "meta.db"
    running = await SqliteStore.open(db)
    await running.put(b"k", b"v")
    fill(small_fs)
    try:
        restarted = await SqliteStore.open(db)
        try:
            assert (await restarted.get(b"k")).value == b"v"  # type: ignore[union-attr]
            assert [i.key for i in await restarted.range(b"", b"\xff")] == [b"k"]
            with pytest.raises(StorageFull):
                for i in range(2000):  # until the WAL needs a page the disk has not
                    await restarted.put(b"x%d" % i, bytes(1024))
        finally:
            await restarted.close()
    finally:
        await running.close()
