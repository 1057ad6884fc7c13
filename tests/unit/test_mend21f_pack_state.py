"""mend21f (review21f F7): what a restart and a save keep of the packs' state: punched holes
still counted as given back, a torn tail alone not counted as pack damage, the drop record
written whole on a short write."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from nodes import packformat as pf
from nodes.disk import DiskShardStore
from nodes.packdrops import _HEAD, Drops, _decode
from nodes.packstore import PackStore
from nodes.smallrecord import read_record
from storage.config import PackSettings

BODY = 9 * 1024


def test_a_restart_counts_the_holes_punched_before_it(tmp_path: Path) -> None:
    s = PackStore(tmp_path, seal_bytes=4 * (BODY + pf.OVERHEAD), reserve_bytes=0)
    s.open()
    try:
        sids = [f"{i:032x}.1" for i in range(1, 9)]
        for sid in sids:
            asyncio.run(s.put(sid, [os.urandom(BODY)]))
        for sid in sids[:4]:
            asyncio.run(s.delete(sid))
        assert asyncio.run(s.punch(min_dead=0)) > 0
        holes, disk = dict(s.holes), s.disk_bytes()
    finally:
        s.close()
    again = PackStore(tmp_path, seal_bytes=4 * (BODY + pf.OVERHEAD), reserve_bytes=0)
    again.open()
    try:
        print("holes before:", holes, "after the restart:", again.holes)
        assert any(holes.values()) and all(again.holes.get(seq, 0) == n for seq, n in holes.items())
        assert again.disk_bytes() <= disk  # not the punched bytes counted again
    finally:
        again.close()


async def test_a_torn_tail_alone_is_not_pack_damage(tmp_path: Path) -> None:
    s = PackStore(tmp_path, seal_bytes=1 << 20, reserve_bytes=0)
    s.open()
    try:
        await s.put(f"{1:032x}.1", [b"x" * 500])
        active = s.path_of(s._active)
    finally:
        s.close()
    with open(active, "ab") as f:  # a crash mid-write: half a record after the last
        f.write(pf.encode(pf.PUT, bytes(16), 2, 1, [b"y" * 500])[0][:30])
    store = DiskShardStore(tmp_path, packs=PackSettings(max_shard_bytes=1 << 20,
                                                        reserve_bytes=0))
    await store.start()
    try:
        assert store.packs is not None and [d.torn for d in store.packs.damage] != [None]
        usage = await store.usage()
        assert usage["pack_damage"] == 0, usage
    finally:
        await store.close()


def test_the_drop_record_is_written_whole_on_short_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drops = Drops(tmp_path)
    drops.open([])
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, b: real(fd, bytes(b)[:7]))
    for seq in (3, 5, 6, 9):
        drops.add(seq)
    monkeypatch.setattr(os, "write", real)
    body = read_record(drops.path, _HEAD)[1]
    assert body is not None and _decode(body) == [(3, 3), (5, 6), (9, 9)]
