"""The node's fan-out directories: the 256 first-level ones are made at start and made
durable by one fsync of `shards/`, so a young node's shard commit makes only its leaf
directory (one mkdir and one parent fsync fewer than before for most early shards)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import nodes.disk
import nodes.shardwrite
from nodes.disk import FIRST_LEVEL, DiskShardStore
from tests.unit.test_shard_format import make_blocks, make_header, put, read_all


class Counted:
    """Counts mkdir and directory fsyncs (by path) made by the store."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.mkdirs: list[str] = []
        self.fsyncs: list[str] = []
        real_mkdir, real_fsync_dir = os.mkdir, nodes.shardwrite.fsync_dir

        def mkdir(path: str, mode: int = 0o777) -> None:
            self.mkdirs.append(os.fspath(path))
            real_mkdir(path, mode)

        def fsync_dir(path: str | Path) -> None:
            self.fsyncs.append(os.fspath(path))
            real_fsync_dir(path)

        monkeypatch.setattr(nodes.disk.os, "mkdir", mkdir)
        monkeypatch.setattr(nodes.disk, "fsync_dir", fsync_dir)
        monkeypatch.setattr(nodes.shardwrite, "fsync_dir", fsync_dir)


async def test_start_makes_every_first_level_directory_durable_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DiskShardStore(tmp_path)
    counted = Counted(monkeypatch)
    await store.start()
    assert sorted(os.listdir(store.shard_dir)) == FIRST_LEVEL
    assert all((store.shard_dir / d).is_dir() for d in FIRST_LEVEL)
    assert counted.fsyncs == [str(store.shard_dir)]  # one fsync covers all 256 entries


async def test_a_young_nodes_shard_makes_only_its_leaf_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DiskShardStore(tmp_path)
    await store.start()
    counted = Counted(monkeypatch)
    header = make_header(stripe=bytes.fromhex("ab" * 16))
    blocks = make_blocks(header, 2)
    sid = await put(store, header, blocks)
    first, leaf = store.shard_dir / "ab", store.shard_dir / "ab" / "ab"
    assert counted.mkdirs == [str(leaf)]
    assert counted.fsyncs == [str(first), str(leaf)]  # leaf's entry, then the shard's
    assert await read_all(store, sid)


async def test_first_level_directories_of_an_earlier_life_are_fsynced_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory an earlier life made may never have had its parent fsynced (it died
    between the two): start covers it again rather than trusting that it exists."""
    (tmp_path / "shards" / "cd").mkdir(parents=True)
    (tmp_path / "shards" / "cd" / "keep").write_bytes(b"x")  # untouched by start
    store = DiskShardStore(tmp_path)
    counted = Counted(monkeypatch)
    await store.start()
    assert counted.fsyncs == [str(store.shard_dir)]
    assert (store.shard_dir / "cd" / "keep").read_bytes() == b"x"
    assert len(os.listdir(store.shard_dir)) == 256


async def test_a_full_disk_does_not_keep_the_node_from_starting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC (or EROFS) making the fan-out directories: the node starts and serves what it
    holds; a directory it could not make is made, and fsynced, by the first commit under it."""
    import errno
    store = DiskShardStore(tmp_path)
    real_mkdir = os.mkdir
    full = {"on": True}

    def mkdir(path: str, mode: int = 0o777) -> None:
        if full["on"] and os.path.dirname(os.fspath(path)) == str(store.shard_dir):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_mkdir(path, mode)

    monkeypatch.setattr(nodes.disk.os, "mkdir", mkdir)
    await store.start()  # before: OSError ENOSPC, the node stayed down
    assert os.listdir(store.shard_dir) == []
    full["on"] = False  # space freed
    counted = Counted(monkeypatch)
    header = make_header(stripe=bytes.fromhex("cd" * 16))
    sid = await put(store, header, make_blocks(header, 2))
    first, leaf = store.shard_dir / "cd", store.shard_dir / "cd" / "cd"
    assert counted.mkdirs == [str(first), str(leaf)]
    assert str(store.shard_dir) in counted.fsyncs and str(first) in counted.fsyncs
    assert await read_all(store, sid)
