"""Sealed packs' footers (nodes.packstore, issue 17): a restart indexes a sealed pack from
its footer, not by reading every record, with the same index and live counts; a footer that
does not check is ignored and the pack scanned; a pack is sealed once, even when the pack
after it fails to open."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from pathlib import Path

import pytest

import nodes.packstore as ps
from nodes import packformat as pf
from nodes.packstore import PackStore
from tests.contract.node_harness import make_shard

SIDS = [f"{i:032x}.{i % 6}" for i in range(1, 41)]


def filled(root: Path) -> PackStore:
    s = PackStore(root, seal_bytes=1000)
    s.open()

    async def go() -> None:
        for sid in SIDS:
            await s.put(sid, [hashlib.shake_256(sid.encode()).digest(100 + len(sid) % 7)])
        for sid in SIDS[::4]:
            await s.delete(sid)
        for sid in SIDS[1::5]:
            await s.put(sid, [b"replaced"], replace=True)
    asyncio.run(go())
    return s


def reopened(s: PackStore) -> PackStore:
    s.close()
    again = PackStore(s.root, s.seal_bytes)
    again.open()
    return again


def test_a_restart_reads_sealed_packs_footers(tmp_path: Path) -> None:
    s = filled(tmp_path)
    index, live, sealed = dict(s.index), dict(s.live), s.footers_written
    assert sealed == len(list(s.pack_dir.glob("*.pack"))) - 1 > 3
    again = reopened(s)
    try:
        assert again.footers_read == sealed and again.damage == []
        assert again.index == index and again.live == live
    finally:
        again.close()


def test_a_footer_that_does_not_check_is_ignored_and_the_pack_scanned(tmp_path: Path) -> None:
    """One bit of a listed write time flipped: only the footer's crc can tell; the pack is
    scanned instead and the index is exactly as before."""
    s = filled(tmp_path)
    index, live, sealed = dict(s.index), dict(s.live), s.footers_written
    s.close()
    pack = tmp_path / "packs" / "0000000000000002.pack"
    data = bytearray(pack.read_bytes())
    foot = int.from_bytes(data[-16:-8], "big")
    assert pf.read_footer(pf.bytes_reader(bytes(data)), len(data))
    data[foot + pf.HEAD_BYTES + 4 + 18 + 7] ^= 1  # entry 0's time, lowest byte
    pack.write_bytes(bytes(data))
    again = PackStore(tmp_path, 1000)
    again.open()
    try:
        assert again.footers_read == sealed - 1 and again.damage == []
        assert again.index == index and again.live == live
    finally:
        again.close()


def test_a_pack_whose_footer_write_failed_is_sealed_and_scanned(tmp_path: Path) -> None:
    s = PackStore(tmp_path, seal_bytes=300)
    s.open()
    real = os.fdatasync
    calls = []

    def failing_footer(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:  # pack 1's footer (after two groups)
            raise OSError(5, "EIO")
        real(fd)

    async def go() -> None:
        for sid, c in zip(SIDS[:5], b"abcde", strict=True):  # a, b: pack 1; c, d: pack 2; e: pack 3
            await s.put(sid, [bytes([c]) * 200])
    try:
        os.fdatasync = failing_footer  # type: ignore[assignment]
        asyncio.run(go())
    finally:
        os.fdatasync = real
    assert s.footers_written == 1 and s.locate(SIDS[2]).seq == 2  # type: ignore[union-attr]
    again = reopened(s)
    try:
        assert again.footers_read == 1 and again.damage == []  # pack 1 scanned
        assert [again.read(again.locate(x)) for x in SIDS[:5]] == \
            [bytes([c]) * 200 for c in b"abcde"]  # type: ignore[arg-type]
    finally:
        again.close()


async def test_a_seal_whose_next_pack_fails_to_open_is_not_sealed_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seal wrote the footer, opening the next pack failed (ENOSPC): the PUTs after it
    wrote a footer each onto the sealed pack, and its restart could no longer use any."""
    store = PackStore(tmp_path, seal_bytes=20_000)
    store.open()
    real = PackStore._new_pack
    fails = [2]

    def new_pack(self: PackStore, seq: int) -> None:
        if fails[0]:
            fails[0] -= 1
            raise OSError(errno.ENOSPC, "no space for a new pack")
        real(self, seq)
    try:
        kept = {}
        for _ in range(3):  # the third fills pack 1 past the seal
            sid, _, _, body = make_shard(frames=2, block_size=4096, last=None)
            await store.put(sid, [body])
            kept[sid] = body
        monkeypatch.setattr(PackStore, "_new_pack", new_pack)
        for _ in range(2):
            sid, _, _, body = make_shard(frames=2, block_size=4096, last=None)
            with pytest.raises(OSError):
                await store.put(sid, [body])
        sid, _, _, body = make_shard(frames=2, block_size=4096, last=None)
        await store.put(sid, [body])
        kept[sid] = body
        assert store.footers_written == 1
    finally:
        await asyncio.to_thread(store.close)
    again = PackStore(tmp_path, seal_bytes=20_000)
    again.open()
    try:
        assert again.footers_read == 1 and again.damage == []
        for sid, want in kept.items():
            loc = again.locate(sid)
            assert loc is not None and again.read(loc) == want
    finally:
        again.close()


async def test_a_full_pack_a_crash_left_unsealed_gets_its_footer_at_restart(
        tmp_path: Path) -> None:
    """A pack is sealed by the append after the one that filled it: a crash in between left
    it full without a footer, and every restart scanned it again (a 256 MiB read)."""
    store = PackStore(tmp_path, seal_bytes=20_000)
    store.open()
    kept = {}
    try:
        for _ in range(3):  # the third fills pack 1 past the seal; nothing seals it
            sid, _, _, body = make_shard(frames=2, block_size=4096, last=None)
            await store.put(sid, [body])
            kept[sid] = body
        assert store.footers_written == 0
    finally:
        await asyncio.to_thread(store.close)
    for footers_read in (0, 1):  # the first restart scans it and seals it; the next reads
        again = PackStore(tmp_path, seal_bytes=20_000)  # its footer
        again.open()
        try:
            assert (again.footers_read, again.damage) == (footers_read, [])
            for sid, want in kept.items():
                loc = again.locate(sid)
                assert loc is not None and loc.seq == 1 and again.read(loc) == want
        finally:
            again.close()


async def test_a_new_pack_that_fails_its_fsync_is_tried_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seal's next pack was created but its directory fsync failed (EIO): the file kept
    the name, so every later append failed on O_EXCL (FileExistsError) until a restart."""
    store = PackStore(tmp_path, seal_bytes=20_000)
    store.open()
    real = ps.fsync_dir
    fails = [1]

    def flaky(path: Path | str) -> None:
        if fails[0]:
            fails[0] -= 1
            raise OSError(errno.EIO, "fsync failed")
        real(path)
    try:
        for _ in range(3):  # the third fills pack 1 past the seal
            sid, _, _, body = make_shard(frames=2, block_size=4096, last=None)
            await store.put(sid, [body])
        monkeypatch.setattr(ps, "fsync_dir", flaky)
        sid, _, _, body = make_shard(frames=2, block_size=4096, last=None)
        with pytest.raises(OSError):
            await store.put(sid, [body])
        await store.put(sid, [body])  # the same append again: pack 2 made this time
        loc = store.locate(sid)
        assert loc is not None and loc.seq == 2 and store.read(loc) == body
    finally:
        await asyncio.to_thread(store.close)
