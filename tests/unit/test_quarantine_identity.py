"""Quarantine moves the shard file that was found bad, never a good copy a repair put at the
same path after the bad one was read (review16e finding 6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodes.disk import DiskShardStore
from storage.errors import ShardCorrupt
from tests.unit.test_shard_format import make_blocks, make_header, put, read_all, shard_bytes


def _rot(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x10
    path.write_bytes(bytes(raw))  # in place: the same inode, now bad


def _repair(path: Path, good: bytes) -> None:
    """What a repair does: a new file renamed over the shard's path."""
    tmp = path.with_name(path.name + ".repair")
    tmp.write_bytes(good)
    os.replace(tmp, path)


@pytest.mark.parametrize("found_by", ["verify", "read"])
async def test_a_good_copy_repaired_in_after_the_bad_read_is_not_quarantined(
        tmp_path: Path, found_by: str) -> None:
    store = DiskShardStore(tmp_path)
    h = make_header(block_size=64)
    blocks = make_blocks(h, 4)
    sid = await put(store, h, blocks)
    path = store.path_of(sid)
    good = shard_bytes(h, blocks)
    _rot(path, h.frame_offset(1) + 12)
    if found_by == "verify":
        bad, read = await store.verify(sid)
        assert bad == [1]
    else:
        with pytest.raises(ShardCorrupt) as caught:
            await read_all(store, sid)
        read = caught.value.file
    assert read == (os.stat(path).st_dev, os.stat(path).st_ino)
    _repair(path, good)
    assert await store.quarantine(sid, "segment 1 bad", read) is None
    assert path.read_bytes() == good  # the repaired copy stays where it was put
    assert not list((tmp_path / "quarantine").iterdir())
    assert (await store.verify(sid)).bad == []


async def test_the_file_that_was_read_bad_is_quarantined(tmp_path: Path) -> None:
    store = DiskShardStore(tmp_path)
    h = make_header(block_size=64)
    sid = await put(store, h, make_blocks(h, 3))
    path = store.path_of(sid)
    _rot(path, h.frame_offset(2) + 9)
    bad, read = await store.verify(sid)
    assert bad == [2]
    dest = await store.quarantine(sid, "segment 2 bad", read)
    assert dest is not None and not path.exists()
    assert (os.stat(dest).st_dev, os.stat(dest).st_ino) == read
    assert (await store.usage())["shards"] == 0
