"""File-backed mappings that cannot kill their process with SIGBUS.

A store into a page of a sparse mapped file on a full file system raises SIGBUS (the
gateways died with status -7, no traceback, when a disk filled): every shared map has its
blocks allocated when it is opened (`storage.sharedmap`), so a full disk is an OSError
there. A shard file that shrinks while it is read (a truncating fault, a lying disk) is a
ShardCorrupt (a 409 and a quarantine), not a ValueError from mapping past its new end nor,
when it shrinks after the mapping, a SIGBUS (`nodes.shardread` reads with pread); that case
runs in a child process, since a SIGBUS would kill it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from storage.metadata.sharedgen import SharedGeneration
from storage.sharedmap import map_shared


def allocated(path: Path) -> int:
    """Bytes of disk blocks the file holds (0 for a sparse file's holes)."""
    return os.stat(path).st_blocks * 512


def test_a_new_shared_map_has_its_blocks_allocated(tmp_path: Path) -> None:
    path = tmp_path / "health"
    fd, mm = map_shared(path, 70_000)
    try:
        assert os.path.getsize(path) == 70_000
        assert allocated(path) >= 70_000
        assert mm[:] == bytes(70_000)
    finally:
        mm.close()
        os.close(fd)


def test_a_sparse_shared_map_left_by_an_older_version_gets_its_blocks(tmp_path: Path) -> None:
    path = tmp_path / "conns"
    with open(path, "wb") as f:
        f.truncate(65536)  # as the old map_shared left it: size set, no blocks
    fd, mm = map_shared(path, 65536)
    try:
        assert allocated(path) >= 65536
    finally:
        mm.close()
        os.close(fd)


def test_the_shared_change_counter_has_its_block_allocated(tmp_path: Path) -> None:
    db = tmp_path / "meta.db"
    db.write_bytes(b"")
    gen = SharedGeneration(tmp_path / "meta.db.authgen", db)
    try:
        assert allocated(tmp_path / "meta.db.authgen") >= 8  # before the first store
        gen.bump()
        assert gen.value() == 1
    finally:
        gen.close()


SHRINK = textwrap.dedent("""
    import asyncio, os, sys
    from pathlib import Path
    from tests.unit.test_hot_shard_reads import stored
    from storage.shards.format import HEADER_BYTES

    async def main() -> None:
        store, sid, body = stored(Path(sys.argv[1]), frames=4)
        frame = (len(body) - HEADER_BYTES) // 4
        stream = store.open_read(sid)
        async with stream:
            _, first = await stream.open_verified(max_bytes=frame, hot=False)
            os.truncate(store.shard_path(sid), HEADER_BYTES + frame)  # frames 1-3 gone
            second = await stream.verified_window(3 * frame)
        print(first[1] == frame and first[2] is None, second[1], second[2])

    asyncio.run(main())
""")


def test_a_shard_that_shrinks_while_read_is_corrupt_not_a_dead_process(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", SHRINK, str(tmp_path)], cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    ok, good, err = run.stdout.split(" ", 2)
    assert (ok, good) == ("True", "0")
    assert "segment 1: file shrank" in err
