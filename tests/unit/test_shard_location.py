"""Every shard reader takes a `ShardLocation` (nodes.shardfile): a shard file, or a range of
a larger file (a pack record's body, issue 17). A shard placed at an offset inside a file
with other bytes around it reads exactly as its own file does: streamed bytes, the file
offsets of sendfile windows (checked, reader-checked, hot), stat, verify, a flipped frame,
a file cut short, and a node's GETs through both fronts and its batch read."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from nodes.app import create_app
from nodes.disk import DiskShardStore
from nodes.handlers import NODE
from nodes.leanput import LeanListener
from nodes.shardfile import ShardLocation, stat_file, verify_file
from nodes.shardread import ShardReadStream
from nodes.smallio import read_whole_sync
from storage.errors import ShardCorrupt
from storage.shards.format import HEADER_BYTES
from tests.contract.node_harness import make_shard
from tests.unit.test_node_get_abort import SECRET, _exchange, _split

BLOCK = 64 * 1024
PRE, POST = 4099, 777  # not page-aligned: offsets must be added, never assumed


def placed(tmp_path: Path, body: bytes, name: str = "pack") -> tuple[ShardLocation,
                                                                    ShardLocation]:
    """The shard as its own file and embedded in a larger one: (file, embedded)."""
    own = tmp_path / f"{name}.own"
    own.write_bytes(body)
    pack = tmp_path / name
    pack.write_bytes(os.urandom(PRE) + body + os.urandom(POST))
    return ShardLocation(own), ShardLocation(pack, PRE, len(body), mtime=1234.5)


async def streamed(sid: str, where: ShardLocation, first: int, count: int | None) -> bytes:
    out = []
    async with ShardReadStream(sid, where, first, count) as stream:
        async for piece in stream:
            out.append(piece)
    return b"".join(out)


async def windows(sid: str, where: ShardLocation, reader_checks: bool, hot: bool,
                  first: int = 0) -> tuple[bytes, list[tuple[int, int, ShardCorrupt | None]],
                                           bytes]:
    """The header, every window as `send_body` asks for them, and the bytes they name."""
    stream = ShardReadStream(sid, where, first, None)
    stream.reader_checks = reader_checks
    got = []
    async with stream:
        head, window = await stream.open_verified(max_bytes=2 * BLOCK, hot=hot)
        got.append(window)
        while got[-1][1] and got[-1][2] is None:
            got.append(await stream.verified_window(2 * BLOCK))
        fd = stream.fileno()
        sent = b"".join(os.pread(fd, good, off) for off, good, _ in got)
    return head, got, sent


@pytest.mark.parametrize(("first", "count"), [(0, None), (1, 2), (3, None), (7, 1)])
async def test_streamed_bytes_are_the_files(tmp_path: Path, first: int,
                                            count: int | None) -> None:
    sid, _, _, body = make_shard(frames=8, block_size=BLOCK, last=1000)
    own, packed = placed(tmp_path, body)
    assert await streamed(sid, packed, first, count) == await streamed(sid, own, first, count)


@pytest.mark.parametrize("reader_checks", [False, True])
@pytest.mark.parametrize("hot", [False, True])
async def test_windows_name_the_files_offsets(tmp_path: Path, reader_checks: bool,
                                              hot: bool) -> None:
    sid, _, _, body = make_shard(frames=9, block_size=BLOCK, last=None)
    own, packed = placed(tmp_path, body)
    head, got, sent = await windows(sid, packed, reader_checks, hot)
    head0, got0, sent0 = await windows(sid, own, reader_checks, hot)
    assert head == head0 == body[:HEADER_BYTES]
    assert sent == sent0 == body[HEADER_BYTES:]
    assert [(o - PRE, g, e) for o, g, e in got] == got0


async def test_a_flipped_frame_is_found_at_its_place(tmp_path: Path) -> None:
    sid, h, _, body = make_shard(frames=6, block_size=BLOCK, last=None)
    bad = bytearray(body)
    bad[h.frame_offset(4) + 100] ^= 1
    own, packed = placed(tmp_path, bytes(bad))
    assert verify_file(packed, sid).bad == verify_file(own, sid).bad == [4]
    with pytest.raises(ShardCorrupt, match="segment 4"):
        await streamed(sid, packed, 0, None)
    _, got, _ = await windows(sid, packed, False, False)
    assert got[-1][2] is not None and "segment 4" in str(got[-1][2])
    assert got[-1][0] == PRE + h.frame_offset(4)


async def test_stat_of_a_range(tmp_path: Path) -> None:
    sid, _, _, body = make_shard(frames=3, block_size=BLOCK, last=10)
    own, packed = placed(tmp_path, body)
    a, b = stat_file(own, sid), stat_file(packed, sid)
    assert b["mtime"] == 1234.5
    drop = ("mtime", "age_s")
    assert {k: v for k, v in a.items() if k not in drop} == \
        {k: v for k, v in b.items() if k not in drop}
    assert b["size"] == len(body) and b["segments"] == 3


async def test_a_range_past_the_files_end_is_corrupt(tmp_path: Path) -> None:
    """A pack cut short under a located shard: the reader says so, it does not read on
    into whatever follows nor stop silently."""
    sid, _, _, body = make_shard(frames=4, block_size=BLOCK, last=None)
    _, packed = placed(tmp_path, body)
    os.truncate(packed.path, PRE + len(body) - 10)
    with pytest.raises(ShardCorrupt):
        await streamed(sid, packed, 0, None)
    assert verify_file(packed, sid).bad == [3]


def test_the_batch_read_reads_the_located_range(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = DiskShardStore(tmp_path / "node")
    sid, h, _, body = make_shard(frames=4, block_size=BLOCK, last=None)
    _, packed = placed(tmp_path, body)
    monkeypatch.setattr(store, "locate", lambda s: packed if s == sid else None)
    data, segments = read_whole_sync(store, sid, 1, 2, 1 << 30)
    assert segments == 4 and data == body[:HEADER_BYTES] + body[h.frame_offset(1):
                                                                 h.frame_offset(3)]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[str, int, DiskShardStore]]:
    """An in-process node, lean front before aiohttp: (host, port, its shard store)."""
    app = create_app("n1", "az1", tmp_path / "data", SECRET, 60)
    runner = web.AppRunner(app)
    await runner.setup()
    listener = LeanListener(app[NODE], runner)
    host, port = await listener.start("127.0.0.1", 0)
    try:
        yield host, port, app[NODE].store
    finally:
        await listener.stop(5)
        await runner.cleanup()


@pytest.mark.parametrize("first", [0, 1])  # from frame 0 the lean front's, else aiohttp's
@pytest.mark.parametrize("reader_checks", [False, True])
async def test_a_node_serves_a_located_shard(node: tuple[str, int, DiskShardStore],
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             first: int, reader_checks: bool) -> None:
    host, port, store = node
    sid, h, _, body = make_shard(frames=40, block_size=BLOCK, last=None)
    _, packed = placed(tmp_path, body)
    real = store.locate
    monkeypatch.setattr(store, "locate", lambda s: packed if s == sid else real(s))
    if reader_checks:
        import nodes.shardget as shardget
        monkeypatch.setattr(shardget, "reader_checks", lambda headers: True)
    answer = await _exchange(host, port, "GET", f"/v1/shards/{sid}?first={first}&count=40")
    head, got = _split(answer)
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert got == body[:HEADER_BYTES] + body[h.frame_offset(first):]
    assert not os.path.exists(store.shard_path(sid))  # no file: the range was read


async def test_a_reader_checked_range_goes_out_unchecked(tmp_path: Path) -> None:
    """A reader that checks frames itself gets a located shard's windows unchecked, its
    last frame's length matched against the range (not the file): a bad byte in that frame
    goes out as it is, as from a shard file."""
    sid, h, _, body = make_shard(frames=5, block_size=BLOCK, last=None)
    bad = bytearray(body)
    bad[h.frame_offset(4) + 9] ^= 1
    _, packed = placed(tmp_path, bytes(bad))
    _, got, sent = await windows(sid, packed, True, False)
    assert all(err is None for _, _, err in got) and sent == bytes(bad[HEADER_BYTES:])
