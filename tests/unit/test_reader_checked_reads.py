"""Shard reads whose reader checks every frame itself (`X-Tessera-Reader-Checks`): the node
sends the frames as they are (no checksum pass, no thread hop for a window in the page
cache), except that a shard whose last frame's length does not match its file still gets
the full check (a 409 and a quarantine, not a short body). `nodes.pagecache.resident`
tells a window in the page cache from one that is not without reading it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from nodes import pagecache, shardread
from nodes.disk import DiskShardStore
from nodes.shardread import ShardReadStream
from storage.errors import ShardCorrupt
from storage.shards.format import FRAME_HEAD_BYTES, HEADER_BYTES
from tests.contract.node_harness import make_shard
from tests.unit.test_hot_shard_reads import CountingPool, stored

BLOCK = 64 * 1024


@pytest.fixture
def pool() -> CountingPool:
    return CountingPool(max_workers=1)


async def read_all(store: DiskShardStore, sid: str, pool: CountingPool, window: int,
                   reader_checks: bool, hot: bool = True,
                   ) -> tuple[list[tuple[int, int, ShardCorrupt | None]], int]:
    """Every window of the whole shard as `send_body` asks for them, and the thread jobs."""
    asyncio.get_running_loop().set_default_executor(pool)
    before = pool.jobs
    stream: ShardReadStream = store.open_read(sid)
    stream.reader_checks = reader_checks
    async with stream:
        _, first = await stream.open_verified(max_bytes=window, hot=hot)
        windows = [first]
        while windows[-1][1] and windows[-1][2] is None:
            windows.append(await stream.verified_window(window))
    return windows, pool.jobs - before


def cachestat(path: str | Path) -> bool:
    """Whether this kernel answers `pagecache.resident`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return pagecache.resident(fd, 0, 1) is not None
    finally:
        os.close(fd)


def fs_type(path: Path) -> str:
    """The type of the file system `path` is on (its mount's, from /proc/self/mountinfo)."""
    path, best, kind = Path(os.path.realpath(path)), -1, ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        mount = Path(fields.split()[4].replace("\\040", " "))
        if path.is_relative_to(mount) and len(mount.parts) > best:
            best, kind = len(mount.parts), rest.split()[0]
    return kind


def test_resident_tells_cached_pages_from_a_hole(tmp_path: Path) -> None:
    """On any file system: written pages are cached, a hole's are not, and asking reads
    none. A hole that was read is cached too, except on tmpfs, which serves it from the
    kernel's zero page (nothing cached; nor is anything on the disk to wait for)."""
    path = tmp_path / "f"
    with open(path, "wb") as f:
        f.write(os.urandom(64 * 1024))
        f.truncate(1024 * 1024)  # a hole: no page of it is in the page cache
    if not cachestat(path):
        pytest.skip("no cachestat(2) on this kernel")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert pagecache.resident(fd, 0, 64 * 1024)
        assert pagecache.resident(fd, 100, 5000)  # a range across a page boundary
        assert not pagecache.resident(fd, 512 * 1024, 4096)
        assert not pagecache.resident(fd, 512 * 1024, 4096)  # asking brought nothing in
        assert not pagecache.resident(fd, 60 * 1024, 8 * 1024)  # ends past the written part
        os.pwrite(fd_w := os.open(path, os.O_WRONLY), os.urandom(4096), 512 * 1024)
        os.close(fd_w)
        assert pagecache.resident(fd, 512 * 1024, 4096)  # written: in the cache
        assert not pagecache.resident(fd, 508 * 1024, 8 * 1024)  # half of it in a hole
        assert len(os.pread(fd, 4096, 768 * 1024)) == 4096
        assert pagecache.resident(fd, 768 * 1024, 4096) == (fs_type(path) != "tmpfs")
        assert pagecache.resident(fd, 0, 0)
    finally:
        os.close(fd)


async def test_a_corrupt_frame_goes_out_unchecked_to_a_checking_reader(
        tmp_path: Path, pool: CountingPool) -> None:
    """The old node cut the body before frame 1 (and quarantined the shard); a reader that
    checks frames gets the bytes as they are, in windows sent from the loop."""
    frames = 6
    sid, h, _, _ = make_shard(frames=frames, block_size=BLOCK, last=None)
    store, sid, body = stored(tmp_path, frames=frames,
                              flip_at=h.frame_offset(1) + FRAME_HEAD_BYTES + 7)
    if not cachestat(store.shard_path(sid)):
        pytest.skip("no cachestat(2) on this kernel")
    window = 2 * (BLOCK + FRAME_HEAD_BYTES)
    got, jobs = await read_all(store, sid, pool, window, reader_checks=True)
    assert [(off, good, err) for off, good, err in got[:-1]] == [
        (h.frame_offset(i), min(h.frame_offset(i + 2), len(body)) - h.frame_offset(i), None)
        for i in range(0, frames, 2)]
    assert got[-1][1:] == (0, None)
    assert jobs == 0  # all resident: no thread hop for any window
    checked, _ = await read_all(store, sid, pool, window, reader_checks=False)
    assert isinstance(checked[0][2], ShardCorrupt) and checked[0][1] == BLOCK + FRAME_HEAD_BYTES


async def test_a_window_not_in_the_page_cache_is_read_in_on_a_thread(
        tmp_path: Path, pool: CountingPool, monkeypatch: pytest.MonkeyPatch) -> None:
    store, sid, body = stored(tmp_path, frames=5)
    monkeypatch.setattr(shardread, "resident", lambda fd, off, n: False)
    window = 2 * (BLOCK + FRAME_HEAD_BYTES)
    got, jobs = await read_all(store, sid, pool, window, reader_checks=True)
    assert sum(good for _, good, _ in got) == len(body) - HEADER_BYTES
    assert all(err is None for *_, err in got)
    assert jobs == 3  # one per window (the first with the open)
    monkeypatch.setattr(shardread, "resident", lambda fd, off, n: None)  # cannot say
    again, jobs = await read_all(store, sid, pool, window, reader_checks=True)
    assert again == got and jobs == 3


@pytest.mark.parametrize("hot", [True, False])
async def test_a_truncated_last_frame_still_gets_the_full_check(
        tmp_path: Path, pool: CountingPool, hot: bool) -> None:
    store, sid, body = stored(tmp_path, frames=3)
    os.truncate(store.shard_path(sid), len(body) - 10)
    got, _ = await read_all(store, sid, pool, 8 * 1024 * 1024, reader_checks=True, hot=hot)
    first = got[0]
    assert isinstance(first[2], ShardCorrupt) and "length" in str(first[2])
    assert first[1] == 2 * (BLOCK + FRAME_HEAD_BYTES)  # the two whole frames before it


async def test_reading_a_window_into_the_page_cache_keeps_no_copy_of_it(
        tmp_path: Path, pool: CountingPool, monkeypatch: pytest.MonkeyPatch) -> None:
    # The window is only read in for sendfile: a worker thread must not keep a buffer the
    # window's size (8 MiB windows times the pool's threads, held for the node's life).
    store, sid, body = stored(tmp_path, frames=40)
    monkeypatch.setattr(shardread, "resident", lambda fd, off, n: False)
    window = 20 * (BLOCK + FRAME_HEAD_BYTES)
    got, _ = await read_all(store, sid, pool, window, reader_checks=True)
    assert sum(good for _, good, _ in got) == len(body) - HEADER_BYTES

    def held() -> int:
        return sum(len(getattr(shardread._scratch, name, b""))
                   for name in ("buf", "small"))

    assert pool.submit(held).result() < window
