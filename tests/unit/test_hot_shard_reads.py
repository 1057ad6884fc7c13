"""A shard the node wrote or read lately (`RecentShards`) is opened, and a first window
that is small and all in the page cache checked, on the event loop: no worker-thread hop.
A window not in the page cache (a read with RWF_NOWAIT says so) still goes to the thread,
and either way the answer (bytes to send, checksum errors) is the thread path's."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from nodes.disk import DiskShardStore, RecentShards
from nodes.shardread import INLINE_WINDOW_BYTES, ShardReadStream
from storage.errors import ShardCorrupt
from storage.shards.format import HEADER_BYTES
from tests.contract.node_harness import make_shard
from tests.pagecache import resident_pages


class CountingPool(ThreadPoolExecutor):
    """The loop's default executor, counting the jobs handed to it."""

    jobs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def pool() -> CountingPool:
    executor = CountingPool(max_workers=1)
    return executor


def stored(tmp_path: Path, frames: int = 3, flip_at: int | None = None,
           ) -> tuple[DiskShardStore, str, bytes]:
    """A shard file on disk (fsynced: its pages clean), optionally one byte flipped."""
    store = DiskShardStore(tmp_path / "node")
    sid, _, _, body = make_shard(frames=frames, block_size=64 * 1024, last=None)
    data = bytearray(body)
    if flip_at is not None:
        data[flip_at] ^= 0x01
    path = store.shard_path(sid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, bytes(data))
        os.fsync(fd)
    finally:
        os.close(fd)
    return store, sid, bytes(data)


async def opened(store: DiskShardStore, sid: str, pool: CountingPool, hot: bool,
                 ) -> tuple[bytes, tuple[int, int, ShardCorrupt | None], int]:
    """`open_verified` of the whole shard and the thread jobs it took."""
    asyncio.get_running_loop().set_default_executor(pool)
    before = pool.jobs
    stream: ShardReadStream = store.open_read(sid)
    async with stream:
        head, window = await stream.open_verified(hot=hot)
    return head, window, pool.jobs - before


async def test_a_hot_cached_shard_is_checked_without_a_thread_hop(
        tmp_path: Path, pool: CountingPool) -> None:
    store, sid, body = stored(tmp_path)
    hot = await opened(store, sid, pool, hot=True)
    cold = await opened(store, sid, pool, hot=False)
    assert hot[2] == 0 and cold[2] == 1
    assert hot[:2] == cold[:2] == (body[:HEADER_BYTES], (HEADER_BYTES, len(body) - HEADER_BYTES,
                                                          None))


async def test_a_hot_shards_large_window_is_checked_on_a_thread(
        tmp_path: Path, pool: CountingPool) -> None:
    store, sid, body = stored(tmp_path, frames=INLINE_WINDOW_BYTES // (64 * 1024) + 1)
    assert len(body) - HEADER_BYTES > INLINE_WINDOW_BYTES
    hot = await opened(store, sid, pool, hot=True)
    assert hot[2] == 1  # opened on the loop, the window checked on the thread
    assert hot[:2] == (body[:HEADER_BYTES], (HEADER_BYTES, len(body) - HEADER_BYTES, None))


def dropped(fd: int, path: str) -> None:
    """Drop the file's pages from the page cache, retrying (bounded) while the kernel keeps
    some: DONTNEED drops only clean, idle pages, and under load writeback or the LRU's
    per-CPU batches can hold a page back for a moment."""
    for _ in range(200):
        os.fsync(fd)  # DONTNEED drops clean pages only: a page not yet written back stays
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if resident_pages(path)[0] == 0:
            return
    raise AssertionError(f"{resident_pages(path)[0]} pages stayed in the page cache")


async def test_a_window_out_of_the_page_cache_is_left_to_the_thread(tmp_path: Path) -> None:
    """(The open's own header read pulls a small file in with the disk's read-ahead, so
    the window is dropped from the cache between the open and the check.)"""
    store, sid, body = stored(tmp_path)
    stream = store.open_read(sid)
    async with stream:
        stream._open_sync()
        fd = stream.fileno()
        assert len(os.pread(fd, len(body), 0)) == len(body)  # the open's read-ahead is done
        dropped(fd, store.shard_path(sid))
        assert stream._verify_resident(1 << 30) is None  # nothing checked, nothing skipped
        assert await stream.verified_window() == (HEADER_BYTES, len(body) - HEADER_BYTES,
                                                  None)


async def test_a_corrupt_frame_of_a_hot_shard_stops_the_window_where_the_thread_does(
        tmp_path: Path, pool: CountingPool) -> None:
    frame = (len(make_shard(frames=1, block_size=64 * 1024, last=None)[3]) - HEADER_BYTES)
    store, sid, _ = stored(tmp_path, flip_at=HEADER_BYTES + frame + 100)  # in frame 1
    hot = await opened(store, sid, pool, hot=True)
    cold = await opened(store, sid, pool, hot=False)
    assert hot[2] == 0
    (_, (h_off, h_good, h_err)), (_, (c_off, c_good, c_err)) = hot[:2], cold[:2]
    assert (h_off, h_good) == (c_off, c_good) == (HEADER_BYTES, frame)  # frame 0 only
    assert isinstance(h_err, ShardCorrupt) and str(h_err) == str(c_err)


def test_recent_shards_forget_the_oldest_first() -> None:
    recent = RecentShards(size=2)
    for sid in ("a", "b", "a", "c"):  # "a" touched again: "b" is now the oldest
        recent.touch(sid)
    assert "a" in recent and "c" in recent and "b" not in recent


async def test_a_committed_shard_is_hot(tmp_path: Path, pool: CountingPool) -> None:
    store = DiskShardStore(tmp_path / "node")
    sid, _, _, body = make_shard(frames=2, block_size=64 * 1024, last=None)
    writer = await store.begin_put(sid)
    await writer.commit(body)
    assert sid in store.recent
    hot = await opened(store, sid, pool, hot=sid in store.recent)
    assert hot[2] == 0 and hot[1] == (HEADER_BYTES, len(body) - HEADER_BYTES, None)
