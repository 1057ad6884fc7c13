"""Shard file format v1 (storage.shards.format) and the node's shard files on disk (disk.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from nodes.disk import DiskShardStore
from nodes.shardfile import ShardExists, check_shard_id
from storage.errors import IntegrityError, InvalidInput, InvalidRange, NotFound, ShardCorrupt
from storage.shards.format import (
    FRAME_HEAD_BYTES,
    HEADER_BYTES,
    FrameReader,
    ShardHeader,
    frame_checksum,
    pack_frame,
    verify_frame,
)
from storage.shards.ids import shard_id

# Golden vectors: if these change, format v1 changed and every stored shard would be unreadable.
GOLDEN_HEADER = ShardHeader(k=4, m=2, index=5, segment_size=1 << 20, block_size=1 << 18,
                            stripe_id=bytes(range(16)))
GOLDEN_HEADER_HEX = ("5453484401040205010000000010000000040000000102030405060708090a0b0c0d0e0f"
                     "000000005c9690bc")
GOLDEN_FRAME_HEX = "00000007eeaef11c74657373657261"  # segment 3, block b"tessera"


def make_header(stripe: bytes | None = None, index: int = 1, block_size: int = 64) -> ShardHeader:
    return ShardHeader(k=4, m=2, index=index, segment_size=block_size * 4, block_size=block_size,
                       stripe_id=stripe if stripe is not None else os.urandom(16))


def make_blocks(header: ShardHeader, n: int, last: int | None = None) -> list[bytes]:
    sizes = [header.block_size] * n
    if last is not None:
        sizes[-1] = last
    return [os.urandom(s) for s in sizes]


def shard_bytes(header: ShardHeader, blocks: list[bytes]) -> bytes:
    return header.pack() + b"".join(pack_frame(header, i, b) for i, b in enumerate(blocks))


# -- format ------------------------------------------------------------------------------------

def test_golden_vectors() -> None:
    assert GOLDEN_HEADER.pack().hex() == GOLDEN_HEADER_HEX
    assert len(GOLDEN_HEADER.pack()) == HEADER_BYTES == 44
    assert pack_frame(GOLDEN_HEADER, 3, b"tessera").hex() == GOLDEN_FRAME_HEX
    assert ShardHeader.unpack(bytes.fromhex(GOLDEN_HEADER_HEX)) == GOLDEN_HEADER


def test_header_round_trip() -> None:
    h = make_header(index=5, block_size=4096)
    assert ShardHeader.unpack(h.pack()) == h
    assert h.frame_offset(0) == HEADER_BYTES
    assert h.frame_offset(3) == HEADER_BYTES + 3 * (FRAME_HEAD_BYTES + 4096)


def test_frames_round_trip_and_offsets() -> None:
    h = make_header()
    blocks = make_blocks(h, 5, last=10)
    raw = shard_bytes(h, blocks)
    frames = FrameReader().feed(raw)
    assert frames == list(enumerate(blocks))
    for i, block in enumerate(blocks):
        off = h.frame_offset(i)
        assert raw[off + FRAME_HEAD_BYTES: off + FRAME_HEAD_BYTES + len(block)] == block


def test_every_flipped_header_bit_is_detected() -> None:
    raw = make_header().pack()
    for bit in range(len(raw) * 8):
        bad = bytearray(raw)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IntegrityError):
            ShardHeader.unpack(bytes(bad))


def test_every_flipped_frame_bit_is_detected() -> None:
    h = make_header(block_size=16)
    raw = shard_bytes(h, make_blocks(h, 2))
    start = h.frame_offset(1)
    for bit in range(start * 8, len(raw) * 8):
        bad = bytearray(raw)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IntegrityError):
            FrameReader().feed(bytes(bad))


def test_frame_moved_within_a_shard_fails() -> None:
    h = make_header()
    b0, b1, b2 = make_blocks(h, 3)
    swapped = h.pack() + pack_frame(h, 0, b0) + pack_frame(h, 2, b2) + pack_frame(h, 1, b1)
    with pytest.raises(IntegrityError, match="segment 1"):
        FrameReader().feed(swapped)
    crc = frame_checksum(h, 2, b2)
    verify_frame(h, 2, b2, crc)
    with pytest.raises(IntegrityError):
        verify_frame(h, 1, b2, crc)


@pytest.mark.parametrize("other", ["index", "stripe"])
def test_frame_moved_into_another_shard_fails(other: str) -> None:
    h = make_header(index=1)
    h2 = make_header(stripe=h.stripe_id, index=2) if other == "index" else make_header(index=1)
    block = os.urandom(h.block_size)
    foreign = pack_frame(h2, 0, block)  # same position, same bytes, another shard
    with pytest.raises(IntegrityError):
        FrameReader().feed(h.pack() + foreign)


def test_frame_reader_byte_by_byte_matches_one_feed() -> None:
    h = make_header(block_size=32)
    blocks = make_blocks(h, 4, last=7)
    raw = shard_bytes(h, blocks)
    reader = FrameReader()
    got = []
    for i in range(len(raw)):
        got += reader.feed(raw[i:i + 1])
    assert got == list(enumerate(blocks))
    assert reader.pending == 0
    assert reader.header == h


def test_frame_reader_without_header_for_range_reads() -> None:
    h = make_header()
    blocks = make_blocks(h, 6)
    tail = b"".join(pack_frame(h, i, blocks[i]) for i in range(3, 6))
    reader = FrameReader(expect_header=False, header=h, first_segment=3)
    assert reader.feed(tail) == [(3, blocks[3]), (4, blocks[4]), (5, blocks[5])]


def test_frame_reader_refuses_bad_lengths_and_keeps_partial_frames() -> None:
    h = make_header(block_size=16)
    with pytest.raises(IntegrityError, match="bad length"):
        FrameReader().feed(h.pack() + bytes(8))  # length 0
    too_long = pack_frame(h, 0, os.urandom(16))
    too_long = (17).to_bytes(4, "big") + too_long[4:] + b"x"
    with pytest.raises(IntegrityError, match="bad length"):
        FrameReader().feed(h.pack() + too_long)
    reader = FrameReader()
    assert reader.feed(h.pack() + pack_frame(h, 0, os.urandom(16))[:-1]) == []
    assert reader.pending == FRAME_HEAD_BYTES + 15


# -- shard ids -----------------------------------------------------------------------------

@pytest.mark.parametrize("sid", ["abc", "../../etc/passwd", "a" * 32 + ".1\n", "a" * 32 + ".01",
                                 "A" * 32 + ".1", "a" * 32 + ".256", "a" * 32, "", "a" * 32 + ".1/x"])
def test_bad_shard_ids_are_refused(sid: str) -> None:
    with pytest.raises(InvalidInput):
        check_shard_id(sid)


# -- the store on disk -----------------------------------------------------------------------

async def put(store: DiskShardStore, header: ShardHeader, blocks: list[bytes],
              replace: bool = False) -> str:
    sid = shard_id(header.stripe_id, header.index)
    w = await store.begin_put(sid)
    raw = shard_bytes(header, blocks)
    for i in range(0, len(raw), 100_000):
        await w.write(raw[i:i + 100_000])
    assert await w.commit(replace=replace) == len(raw)
    return sid


async def read_all(store: DiskShardStore, sid: str, first: int = 0,
                   count: int | None = None) -> bytes:
    out = b""
    async with store.open_read(sid, first, count) as stream:
        async for piece in stream:
            out += piece
    return out


async def test_store_put_read_range_stat(tmp_path: Path) -> None:
    store = DiskShardStore(tmp_path)
    await store.start()
    h = make_header(block_size=300 * 1024)  # several frames per 1 MiB piece, plus a remainder
    blocks = make_blocks(h, 7, last=1234)
    sid = await put(store, h, blocks)
    raw = shard_bytes(h, blocks)
    assert (tmp_path / "shards" / sid[:2] / sid[2:4] / sid).read_bytes() == raw
    assert list((tmp_path / "tmp").iterdir()) == []
    assert await read_all(store, sid) == raw
    part = await read_all(store, sid, 2, 3)
    assert part == h.pack() + b"".join(pack_frame(h, i, blocks[i]) for i in range(2, 5))
    assert await read_all(store, sid, 5, 100) == h.pack() + raw[h.frame_offset(5):]
    assert await read_all(store, sid, 7) == h.pack()
    with pytest.raises(InvalidRange):
        await read_all(store, sid, 8)
    stream = store.open_read(sid, 1, 2)
    async with stream:
        got = b"".join([p async for p in stream])
    assert stream.segments == 7 and stream.body_bytes == len(got)
    st = await store.stat(sid)
    assert (st["size"], st["segments"], st["k"], st["m"], st["index"]) == (len(raw), 7, 4, 2, 1)
    assert (await store.verify(sid)).bad == []
    usage = await store.usage()
    assert usage["shards"] == 1 and usage["used_bytes"] == len(raw) and usage["free_bytes"] > 0


async def test_store_abort_leaves_nothing(tmp_path: Path) -> None:
    store = DiskShardStore(tmp_path)
    h = make_header()
    sid = shard_id(h.stripe_id, h.index)
    async with await store.begin_put(sid) as w:
        await w.write(shard_bytes(h, make_blocks(h, 2)))
    assert list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(NotFound):
        await store.stat(sid)
    with pytest.raises(NotFound):
        await read_all(store, sid)
    assert await store.list() == []


async def test_store_detects_and_quarantines_corruption(tmp_path: Path) -> None:
    store = DiskShardStore(tmp_path)
    h = make_header(block_size=64)
    blocks = make_blocks(h, 6, last=5)
    sid = await put(store, h, blocks)
    path = store.path_of(sid)
    raw = bytearray(path.read_bytes())
    raw[h.frame_offset(2) + FRAME_HEAD_BYTES + 3] ^= 0x10  # bit rot in block 2
    raw[h.frame_offset(4) + 1] ^= 0x01  # damaged length field of frame 4
    path.write_bytes(bytes(raw[:-1]))  # and a torn last frame
    assert (await store.verify(sid)).bad == [2, 4, 5]
    pieces = []
    with pytest.raises(ShardCorrupt, match="segment 2"):
        async for piece in store.open_read(sid):
            pieces.append(piece)
    assert b"".join(pieces) == h.pack() + bytes(raw[h.frame_offset(0):h.frame_offset(2)])
    assert await read_all(store, sid, 3, 1) == h.pack() + bytes(raw[h.frame_offset(3):
                                                                    h.frame_offset(4)])
    dest = await store.quarantine(sid, "segments [2, 4, 5] fail their checks")
    assert dest is not None and dest.parent == tmp_path / "quarantine"
    side = json.loads(dest.with_name(dest.name + ".json").read_text())
    assert side["shard_id"] == sid and "segments" in side["reason"] and side["time"] > 0
    assert not path.exists()
    assert await store.quarantine(sid, "again") is None
    assert (await store.usage())["shards"] == 0


async def test_store_corrupt_header(tmp_path: Path) -> None:
    store = DiskShardStore(tmp_path)
    h = make_header()
    sid = await put(store, h, make_blocks(h, 2))
    path = store.path_of(sid)
    raw = bytearray(path.read_bytes())
    raw[10] ^= 1
    path.write_bytes(bytes(raw))
    for call in (store.verify(sid), store.stat(sid), read_all(store, sid)):
        with pytest.raises(ShardCorrupt, match="header"):
            await call
    # a valid header of another shard under this name is corruption too
    other = make_header()
    path.write_bytes(shard_bytes(other, make_blocks(other, 1)))
    with pytest.raises(ShardCorrupt, match="another shard"):
        await store.stat(sid)


async def test_store_list_delete_and_ids(tmp_path: Path) -> None:
    store = DiskShardStore(tmp_path)
    ids = []
    for _ in range(12):
        h = make_header(index=int.from_bytes(os.urandom(1), "big") % 6)
        ids.append(await put(store, h, make_blocks(h, 1)))
    ids.sort()
    assert await store.list() == ids
    assert await store.list(limit=5) == ids[:5]
    assert await store.list(after=ids[4], limit=5) == ids[5:10]
    assert await store.list(after=ids[-1]) == []
    assert await store.list(after=ids[3][:3]) == [i for i in ids if i > ids[3][:3]]
    (tmp_path / "shards" / "zz").mkdir()
    (store.path_of(ids[0]).parent / "stray.txt").write_text("not a shard")
    assert await store.list() == ids
    assert await store.delete(ids[0]) is True
    assert await store.delete(ids[0]) is False
    assert await store.list() == ids[1:]
    assert (await store.usage())["shards"] == 11
    for bad in ("../../etc/passwd", "abc", "a" * 32 + ".01"):
        with pytest.raises(InvalidInput):
            await store.begin_put(bad)
        with pytest.raises(InvalidInput):
            store.open_read(bad)
        with pytest.raises(InvalidInput):
            await store.delete(bad)


async def test_store_overwrite_keeps_accounting(tmp_path: Path) -> None:
    store = DiskShardStore(tmp_path)
    await store.start()
    h = make_header()
    first, other = make_blocks(h, 3), make_blocks(h, 2)
    sid = await put(store, h, first)
    await put(store, h, first)  # the same bytes again: an idempotent success
    with pytest.raises(ShardExists):  # other bytes, not a repair: refused, nothing changes
        await put(store, h, other)
    assert store.path_of(sid).read_bytes() == shard_bytes(h, first)
    assert os.listdir(tmp_path / "tmp") == []
    usage = await store.usage()
    assert (usage["shards"], usage["used_bytes"]) == (1, len(shard_bytes(h, first)))
    await put(store, h, other, replace=True)  # a repair replaces it
    usage = await store.usage()
    assert usage["shards"] == 1
    assert usage["used_bytes"] == len(shard_bytes(h, other))


async def test_store_cleans_stale_temp_files_at_start(tmp_path: Path) -> None:
    DiskShardStore(tmp_path)
    old, fresh = tmp_path / "tmp" / "old.tmp", tmp_path / "tmp" / "fresh.tmp"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    store = DiskShardStore(tmp_path)
    await store.start()
    assert not old.exists() and fresh.exists()


def test_stat_reports_the_age_on_the_node_clock(tmp_path: Path) -> None:
    """The orphan sweep's grace is measured with this: the node's clock less the mtime its
    own clock set, never another host's clock against this mtime."""
    from nodes.shardfile import ShardLocation, stat_file

    h = make_header()
    sid = shard_id(h.stripe_id, h.index)
    path = tmp_path / sid
    path.write_bytes(shard_bytes(h, make_blocks(h, 2)))
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))
    st = stat_file(ShardLocation(path), sid)
    assert st["mtime"] == pytest.approx(hour_ago)
    assert 3600 <= st["age_s"] < 3600 + 600
