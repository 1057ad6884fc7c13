"""Compaction under damage and failed disk calls (review18f findings 5, 6, 7): damaged bytes
no index names are copied to quarantine before their pack is unlinked, a failed directory
fsync or cut-back does not wedge later runs until a restart, and compact_ratio is below 1."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import nodes.packsteps as steps
from nodes.packrecovery import pack_name
from nodes.packstore import PackStore
from storage.config import PackSettings
from storage.errors import ConfigError
from tests.contract.node_harness import make_shard


def _shards(n: int) -> list[tuple[str, bytes]]:
    return [(sid, body) for sid, _, _, body in
            (make_shard(frames=1, block_size=4096, last=None) for _ in range(n))]


def test_compaction_keeps_a_damaged_records_bytes_in_quarantine(tmp_path: Path) -> None:
    """One flipped bit in a record's trailer (and the footer, so a restart scans): the
    record is `bad`, not indexed, its pack looks emptier and is compacted; its bytes (an
    acknowledged shard's body, intact) must be set aside before the pack is unlinked."""
    shards = _shards(4)
    s = PackStore(tmp_path, seal_bytes=3 * 4200)
    s.open()
    asyncio.run(_put_all(s, shards))
    loc = s.locate(shards[1][0])
    assert loc is not None
    s.close()
    path = tmp_path / "packs" / pack_name(loc.seq)
    with open(path, "r+b") as f:
        for at in (loc.offset + loc.length, os.path.getsize(path) - 30):
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 1]))
    raw = path.read_bytes()
    s = PackStore(tmp_path, seal_bytes=3 * 4200)
    s.open()
    try:
        [harm] = s.damage
        [bad] = harm.bad
        assert shards[1][0] not in s.index
        assert asyncio.run(_delete_and_compact(s, shards[0][0])) >= 0
        assert not path.exists()
        kept = [p for p in (tmp_path / "quarantine").iterdir() if p.name.endswith(".damaged")]
        assert [p.read_bytes() for p in kept] == [raw[bad.offset:bad.end]]
        assert shards[1][1] in kept[0].read_bytes()  # the shard's bytes, whole
        assert s.damage == []
    finally:
        s.close()


def test_a_failed_directory_fsync_after_an_unlink_does_not_wedge_compaction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shards = _shards(6)
    s = PackStore(tmp_path, seal_bytes=8000)
    s.open()
    try:
        asyncio.run(_put_all(s, shards))
        asyncio.run(_delete_all(s, [sid for sid, _ in shards[:4]]))
        assert len(s.candidates()) >= 2
        real = steps.fsync_dir
        failed: list[str] = []

        def flaky(p: Path | str) -> None:
            if not failed and str(p).endswith("packs"):
                failed.append(str(p))
                raise OSError(5, "EIO")
            real(p)
        monkeypatch.setattr(steps, "fsync_dir", flaky)
        with pytest.raises(OSError):
            asyncio.run(s.compact())
        asyncio.run(s.compact())  # the next run recovers (it raised FileNotFoundError)
        assert s.candidates() == []
        for sid, body in shards[4:]:
            loc = s.locate(sid)
            assert loc is not None and s.read(loc) == body
    finally:
        s.close()
    again = PackStore(tmp_path, seal_bytes=8000)
    again.open()
    try:
        assert sorted(again.index) == sorted(sid for sid, _ in shards[4:])
    finally:
        again.close()


def test_a_failed_cut_back_does_not_wedge_compaction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group's fdatasync fails and so does the cut-back's: the pack is retired. It was
    recorded at `seal_bytes`, past its end, and every later compaction of it raised."""
    shards = _shards(3)
    s = PackStore(tmp_path, seal_bytes=1 << 20)
    s.open()
    try:
        asyncio.run(_put_all(s, shards))
        real = os.fdatasync
        fails = [2]

        def flaky(fd: int) -> None:
            if fails[0]:
                fails[0] -= 1
                raise OSError(5, "EIO")
            real(fd)
        monkeypatch.setattr(os, "fdatasync", flaky)
        with pytest.raises(OSError):
            asyncio.run(_put_all(s, _shards(1)))
        monkeypatch.setattr(os, "fdatasync", real)
        first = min(s.sizes)
        assert s.sizes[first] == os.path.getsize(s.path_of(first))
        asyncio.run(_put_all(s, _shards(1)))  # written on, in a new pack
        asyncio.run(_delete_all(s, [sid for sid, _ in shards]))
        asyncio.run(s.compact())
        asyncio.run(s.compact())
        assert first not in s.sizes and not s.path_of(first).exists()
    finally:
        s.close()


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1])
def test_compact_ratio_must_be_below_one(ratio: float) -> None:
    """At 1.0 a fully live pack (its size counts its footer) is copied at every interval."""
    with pytest.raises(ConfigError, match="compact_ratio"):
        PackSettings(compact_ratio=ratio)
    PackSettings(compact_ratio=0.99)


async def _put_all(s: PackStore, shards: list[tuple[str, bytes]]) -> None:
    for sid, body in shards:
        await s.put(sid, [body])


async def _delete_all(s: PackStore, sids: list[str]) -> None:
    for sid in sids:
        assert await s.delete(sid)


async def _delete_and_compact(s: PackStore, sid: str) -> int:
    await s.delete(sid)
    return await s.compact()
