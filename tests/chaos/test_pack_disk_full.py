"""A disk that fills up under packed shards (issue 17): freeing space takes space, since a
DELETE appends a tombstone and only compaction, which copies live records forward first,
gives blocks back. Without space kept back (`nodes.packreserve`) a node that filled up could
never free any: its DELETEs and its compaction both failed with ENOSPC, for good (seen: 89
of 190 deletes refused, compaction refused, 0 bytes free afterwards).

On a small ext4 (a loop device; root only, as the other power-cut tests): fill the packs
until a PUT is refused, delete two shards in three (every DELETE succeeds), compact (it
succeeds, the disk has room again and PUTs are taken), restart: every kept shard reads back
and no deleted one returns. ~2-4 s."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes.packstore import PackStore
from tests.contract.node_harness import make_shard
from tests.power_cut import NEEDS, Disk, made_disk

pytestmark = NEEDS

IMAGE_BYTES = 32 * 1024 * 1024
SEAL = 1 << 20


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    yield from made_disk(tmp_path, IMAGE_BYTES)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


async def _fill(store: PackStore) -> dict[str, bytes]:
    held: dict[str, bytes] = {}
    while True:
        sid, _, _, body = make_shard(frames=16, block_size=4096, last=None)
        try:
            await store.put(sid, [body])
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            return held
        held[sid] = body


def _fill_up(path: Path) -> None:
    """Take what space a refused PUT left (its cut-back freed its blocks), 4 KiB at a time
    (into `path`, made before the disk filled: a new name may need a block too)."""
    with open(path, "ab", buffering=0) as fh:
        try:
            while True:
                fh.write(bytes(4096))
                os.fsync(fh.fileno())
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


async def test_a_full_disk_of_packs_frees_space_by_deletes_and_compaction(disk: Disk) -> None:
    disk.attach(volatile=False)
    root = disk.mnt / "node"
    store = PackStore(root, seal_bytes=SEAL)
    store.open()
    (disk.mnt / "filler").touch()
    try:
        held = await _fill(store)
        assert len(held) > 50
        _fill_up(disk.mnt / "filler")
        deleted = [sid for i, sid in enumerate(held) if i % 3]
        refused = []
        for sid in deleted:
            try:
                assert await store.delete(sid)
            except OSError as exc:
                refused.append(exc.errno)
        assert refused == []  # a full node must still take deletes
        for sid in deleted:
            del held[sid]
        assert not store.reserve.armed  # given up for the tombstones: until compaction
        extra, _, _, body = make_shard(frames=16, block_size=4096, last=None)  # takes it
        with pytest.raises(OSError) as refused_put:  # back, the space freed is not for
            await store.put(extra, [body])  # new shards
        assert refused_put.value.errno == errno.ENOSPC
        before = store.disk_bytes()
        assert store.candidates()
        await store.compact()  # must not fail for want of space
        assert store.candidates() == []
        assert store.disk_bytes() < before / 2 and store.reserve.armed  # kept back again
        assert _free(root) > 2 * SEAL
        more, _, _, body = make_shard(frames=16, block_size=4096, last=None)
        await store.put(more, [body])  # room again for new shards
        held[more] = body
    finally:
        await asyncio.to_thread(store.close)
    again = PackStore(root, seal_bytes=SEAL)
    again.open()
    try:
        for sid, want in held.items():
            loc = again.locate(sid)
            assert loc is not None and again.read(loc) == want, sid
        assert not [sid for sid in deleted if sid in again.index]
        assert again.damage == []
    finally:
        again.close()
