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


def test_resident_tells_cached_pages_from_a_hole(tmp_path: Path) -> None:
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
        assert not pagecache.resident(fd, 60 * 1024, 8 * 1024)  # ends past the written part
        os.pread(fd, 4096, 512 * 1024)
        assert pagecache.resident(fd, 512 * 1024, 4096)
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
