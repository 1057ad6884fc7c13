"""Large streamed shard PUTs are written around the page cache (`nodes.directio`): every
byte lands in order, the aligned bulk with O_DIRECT and only the unaligned tail buffered;
a file system without O_DIRECT, or one refusing the I/O, falls back to buffered writes."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from nodes import directio
from nodes.directio import ALIGN, BUFFER_BYTES, DirectAppender
from nodes.disk import DiskShardStore
from tests.contract.node_harness import make_shard


def direct_supported(where: Path) -> bool:
    fd = os.open(where / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        return directio._set_direct(fd, True)
    finally:
        os.close(fd)
        os.unlink(where / "probe")


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int]]:
    """(O_DIRECT on, bytes) of every os.write the appender makes."""
    seen: list[tuple[bool, int]] = []
    real = os.write

    def spy(fd: int, data: Any) -> int:
        n = real(fd, data)
        seen.append((bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT), n))
        return n

    monkeypatch.setattr(directio.os, "write", spy)
    return seen


def _parts(total: int) -> list[bytes]:
    sizes, left = [1, 4095, 700_001, BUFFER_BYTES + 13, 3], total
    out = []
    while left:
        n = min(sizes[len(out) % len(sizes)], left)
        out.append(os.urandom(n))
        left -= n
    return out


def test_the_appender_writes_the_aligned_bulk_direct_and_the_tail_buffered(
        tmp_path: Path, writes: list[tuple[bool, int]]) -> None:
    if not direct_supported(tmp_path):
        pytest.skip("no O_DIRECT on this file system")
    parts = _parts(3 * BUFFER_BYTES + 12_345)
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    app = DirectAppender.open(fd)
    assert app is not None
    app.append(parts[:3])
    app.append(parts[3:])
    app.close()
    os.close(fd)
    assert path.read_bytes() == b"".join(parts)
    direct = [n for on, n in writes if on]
    assert sum(direct) == 3 * BUFFER_BYTES + 12_345 // ALIGN * ALIGN
    assert all(n % ALIGN == 0 for n in direct)
    assert [(on, n) for on, n in writes if not on] == [(False, 12_345 % ALIGN)]


def test_a_file_system_without_o_direct_keeps_buffered_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(directio, "_set_direct", lambda fd, on: False)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert DirectAppender.open(fd) is None
    finally:
        os.close(fd)


def test_a_refused_direct_write_is_finished_buffered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not direct_supported(tmp_path):
        pytest.skip("no O_DIRECT on this file system")
    real = os.write

    def picky(fd: int, data: Any) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "no direct I/O here")
        return real(fd, data)

    monkeypatch.setattr(directio.os, "write", picky)
    parts = _parts(2 * BUFFER_BYTES + 5)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    app = DirectAppender.open(fd)
    assert app is not None
    app.append(parts)
    app.close()
    os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"".join(parts)


async def test_a_direct_shard_write_commits_the_same_file_outside_the_page_cache(
        tmp_path: Path, writes: list[tuple[bool, int]]) -> None:
    if not direct_supported(tmp_path):
        pytest.skip("no O_DIRECT on this file system")
    store = DiskShardStore(tmp_path / "node")
    await store.start()
    directio._POOL.clear()
    sid, _, _, body = make_shard(frames=5, block_size=BUFFER_BYTES, last=777)
    writer = await store.begin_put(sid)
    writer.direct = True
    view = memoryview(body)
    await writer.write_many([view[:3_000_000], view[3_000_000:4_500_000]])
    assert await writer.commit([view[4_500_000:]]) == len(body)
    path = store.shard_path(sid)
    with open(path, "rb") as f:
        assert f.read() == body
    assert sum(n for on, n in writes if on) == len(body) // ALIGN * ALIGN
    assert len(directio._POOL) == 1  # the buffer went back to the pool


async def test_an_aborted_direct_write_leaves_nothing_and_returns_its_buffer(
        tmp_path: Path) -> None:
    if not direct_supported(tmp_path):
        pytest.skip("no O_DIRECT on this file system")
    store = DiskShardStore(tmp_path / "node")
    await store.start()
    directio._POOL.clear()
    sid, _, _, body = make_shard(frames=2, block_size=BUFFER_BYTES, last=None)
    writer = await store.begin_put(sid)
    writer.direct = True
    await writer.write_many([body[:BUFFER_BYTES + 100]])
    assert not directio._POOL
    await writer.abort()
    assert len(directio._POOL) == 1
    assert list((tmp_path / "node" / "tmp").iterdir()) == []
    assert not os.path.exists(store.shard_path(sid))


def test_a_buffer_released_while_a_write_reads_it_is_never_pooled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancelled upload's release comes from another thread while the writer thread's
    os.write may still be reading the buffer: that buffer must not go back to the pool,
    where another upload would fill it under the write (its bytes would land in this
    file), and the write in flight finishes with its own bytes."""
    if not direct_supported(tmp_path):
        pytest.skip("no O_DIRECT on this file system")
    directio._POOL.clear()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    app = DirectAppender.open(fd)
    assert app is not None
    entered, go_on = threading.Event(), threading.Event()
    real = os.write

    def slow(fd_: int, data: Any) -> int:
        entered.set()
        assert go_on.wait(10)
        return real(fd_, data)

    monkeypatch.setattr(directio.os, "write", slow)
    body = os.urandom(BUFFER_BYTES)
    writer = threading.Thread(target=app.append, args=([body],))
    writer.start()
    assert entered.wait(10)  # the buffer is full and its write is in the kernel
    app.release()  # the cancelled upload's discard, from another thread
    assert not directio._POOL  # not pooled: nobody else can fill it now
    other = directio.take_buffer()
    other[:8] = b"BBBBBBBB"  # what a second upload would do with a pooled buffer
    go_on.set()
    writer.join(10)
    os.close(fd)
    assert (tmp_path / "f").read_bytes() == body
    app.release()  # idempotent
    app.close()  # and nothing left to write
    assert not directio._POOL


@pytest.mark.parametrize(("direct", "warm", "hinted"), [
    (True, True, True),  # a data shard written around the page cache: read back
    (True, False, False),  # a parity shard: GETs do not read it, it stays out
    (False, True, False),  # written buffered: its pages are cached already
])
async def test_a_warm_direct_shard_is_read_back_into_the_page_cache_after_its_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool, warm: bool,
        hinted: bool) -> None:
    if direct and not direct_supported(tmp_path):
        pytest.skip("no O_DIRECT on this file system")
    store = DiskShardStore(tmp_path / "node")
    await store.start()
    sid, _, _, body = make_shard(frames=3, block_size=BUFFER_BYTES, last=777)
    writer = await store.begin_put(sid)
    writer.direct, writer.warm = direct, warm
    await writer.write_many([body[:BUFFER_BYTES + 100]])
    events: list[tuple[str, int]] = []
    real_fsync, real_advise = os.fsync, os.posix_fadvise

    def fsync(fd: int) -> None:
        events.append(("fsync", fd))
        real_fsync(fd)

    def advise(fd: int, offset: int, length: int, advice: int) -> None:
        events.append(("advise", advice))
        real_advise(fd, offset, length, advice)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "posix_fadvise", advise)
    assert await writer.commit([body[BUFFER_BYTES + 100:]]) == len(body)
    assert Path(store.shard_path(sid)).read_bytes() == body
    hints = [e for e in events if e[0] == "advise"]
    assert hints == ([("advise", os.POSIX_FADV_WILLNEED)] if hinted else [])
    if hinted:  # after the file's and its directory's fsyncs: installed and durable first
        fsyncs = [i for i, e in enumerate(events) if e[0] == "fsync"]
        assert len(fsyncs) >= 2 and events.index(hints[0]) > fsyncs[-1]
    again = await store.begin_put(sid)  # the same bytes again (UNCHANGED): no read-back
    again.direct, again.warm = direct, warm
    events.clear()
    assert await again.commit([body]) == len(body)
    assert not [e for e in events if e[0] == "advise"]
