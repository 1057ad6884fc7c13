"""review20d H1: the reserve only covers compaction when a candidate pack's live records
fit in it. A sealed pack below compact_ratio may hold up to ratio*seal_bytes live (128 MiB
of a 256 MiB pack, against the 8 MiB reserve it had): on a full disk the copy-forward ran
out after the reserve, compaction failed, and the reserve was gone for good (only `_drop`
re-arms it) - PUTs then refused forever. Scaled down here: 4 MiB packs, 256 KiB steps.

mend20d: the reserve is a whole pack by default (`[packs] reserve_bytes`), given up a piece
at a time (what a write needs), candidates go emptiest first, and one whose records do not
fit in free space plus the reserve is skipped, not the end of the run."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes import packsteps
from nodes.packstore import PackStore
from tests.chaos.test_pack_disk_full import _fill, _fill_up
from tests.contract.node_harness import make_shard
from tests.power_cut import NEEDS, Disk, made_disk

pytestmark = NEEDS


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    yield from made_disk(tmp_path, 32 * 1024 * 1024)


async def test_full_disk_compaction_of_packs_with_more_live_than_the_reserve(
        disk: Disk, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packsteps, "STEP_BYTES", 256 * 1024)
    disk.attach(volatile=False)
    root = disk.mnt / "node"
    store = PackStore(root, seal_bytes=4 << 20, reserve_bytes=1 << 20)
    store.open()
    (disk.mnt / "filler").touch()
    try:
        held = await _fill(store)
        _fill_up(disk.mnt / "filler")
        deleted = [sid for i, sid in enumerate(held) if i % 5 < 3]  # 40% live per pack
        for sid in deleted:
            assert await store.delete(sid)
        assert store.candidates()
        try:
            await store.compact()
            compact_err = None
        except OSError as exc:
            compact_err = exc.errno
        later, _, _, body = make_shard(frames=16, block_size=4096, last=None)
        refused = []
        for sid in [s for i, s in enumerate(held) if i % 5 == 3][:20]:
            try:
                await store.delete(sid)
            except OSError as exc:
                refused.append(exc.errno)
        again = []
        for _ in range(3):
            try:
                await store.compact()
                again.append(None)
            except OSError as exc:
                again.append(exc.errno)
        try:
            await store.put(later, [body])
            put_err = None
        except OSError as exc:
            put_err = exc.errno
        print("compact again:", again, "put:", put_err)
        print("compact:", compact_err, "reserve armed:", store.reserve.armed,
              "candidates left:", len(store.candidates()), "later deletes refused:",
              len(refused))
        assert compact_err is None, "compaction on a full disk failed: " + errno.errorcode[
            compact_err]
        assert refused == []
    finally:
        await asyncio.to_thread(store.close)


async def test_full_disk_compaction_reaches_an_empty_pack_behind_a_fuller_one(
        disk: Disk, monkeypatch: pytest.MonkeyPatch) -> None:
    """Candidates are compacted in pack order and the job stops at the first failure: a
    pack with nothing live (free to drop) after one the reserve cannot copy is never
    reached, on every run."""
    monkeypatch.setattr(packsteps, "STEP_BYTES", 256 * 1024)
    disk.attach(volatile=False)
    root = disk.mnt / "node"
    store = PackStore(root, seal_bytes=4 << 20, reserve_bytes=1 << 20)
    store.open()
    (disk.mnt / "filler").touch()
    try:
        held = await _fill(store)
        _fill_up(disk.mnt / "filler")
        seq_of = {sid: store.index.get(sid).seq for sid in held}
        sealed = sorted({s for s in seq_of.values() if s != store._active})
        last = sealed[-1]
        deleted = [sid for i, sid in enumerate(held) if seq_of[sid] == last or i % 5 < 3]
        for sid in deleted:
            assert await store.delete(sid)
        assert store.live.get(last, 0) == 0 and last in store.candidates()
        errs = []
        for _ in range(2):
            try:
                await store.compact()
                errs.append(None)
            except OSError as exc:
                errs.append(exc.errno)
        print("compact runs:", errs, "empty pack still there:", last in store.sizes)
        assert last not in store.sizes, "an empty pack was never dropped"
    finally:
        await asyncio.to_thread(store.close)


@pytest.fixture
def big_disk(tmp_path: Path) -> Iterator[Disk]:
    yield from made_disk(tmp_path, 112 * 1024 * 1024)


async def test_default_reserve_and_steps_with_32_mib_packs(big_disk: Disk) -> None:
    """The default reserve (8 MiB) and steps (4 MiB), packs of 32 MiB (the default is 256)
    40% live: 12.8 MiB to copy before a pack's blocks come back."""
    disk = big_disk
    disk.attach(volatile=False)
    root = disk.mnt / "node"
    store = PackStore(root, seal_bytes=32 << 20)
    store.open()
    (disk.mnt / "filler").touch()
    try:
        held: dict[str, bytes] = {}
        while True:
            sid, _, _, body = make_shard(frames=64, block_size=4096, last=None)
            try:
                await store.put(sid, [body])
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
            held[sid] = body
        _fill_up(disk.mnt / "filler")
        for sid in [s for i, s in enumerate(held) if i % 5 < 3]:
            assert await store.delete(sid)
        errs = []
        for _ in range(2):
            try:
                await store.compact()
                errs.append(None)
            except OSError as exc:
                errs.append(exc.errno)
        print("default reserve: compact runs:", errs, "armed:", store.reserve.armed,
              "candidates:", len(store.candidates()))
        assert errs == [None, None]
    finally:
        await asyncio.to_thread(store.close)


async def test_space_freed_for_deletes_is_not_taken_from_compaction(
        disk: Disk, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tombstones on a full disk give up only what they need of the reserve: another writer
    (a shard file, another node on the file system) that takes the free space after them
    leaves compaction the rest, which holds a pack's live records (with the whole reserve
    given up at the first tombstone, that writer took it and compaction met ENOSPC)."""
    monkeypatch.setattr(packsteps, "STEP_BYTES", 256 * 1024)
    disk.attach(volatile=False)
    root = disk.mnt / "node"
    store = PackStore(root, seal_bytes=4 << 20, reserve_bytes=4 << 20)
    store.open()
    (disk.mnt / "filler").touch()
    try:
        held = await _fill(store)
        _fill_up(disk.mnt / "filler")
        gone = [sid for i, sid in enumerate(held) if i % 5 < 3]  # 40% live per pack
        for sid in gone:
            assert await store.delete(sid)
        _fill_up(disk.mnt / "filler")  # the space the tombstones freed, taken by another
        assert store.candidates()
        await store.compact()
        assert store.candidates() == [] and store.reserve.armed
        later, _, _, body = make_shard(frames=16, block_size=4096, last=None)
        await store.put(later, [body])  # the node takes PUTs again
        kept = {sid for sid in held if sid not in set(gone)}
        for sid in list(kept)[:20]:
            loc = store.locate(sid)
            assert loc is not None and store.read(loc) == held[sid]
    finally:
        await asyncio.to_thread(store.close)
