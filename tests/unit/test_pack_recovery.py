"""A restart's view of one pack (nodes.packrecovery): a sealed pack from its footer, else a
scan; a torn tail copied to quarantine, then cut off, and appends go on after it; damage
inside a pack reported and its bytes left in place."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes import packformat as pf
from nodes.packrecovery import pack_name, recover
from nodes.packstore import PackStore
from tests.unit.test_pack_store import SIDS, read, reopen

STRIPES = [bytes([i]) * 16 for i in range(1, 4)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PackStore]:
    s = PackStore(tmp_path, reserve_bytes=1 << 18)
    s.open()
    yield s
    s.close()


def _pack(tmp_path: Path, data: bytes) -> tuple[int, Path]:
    (tmp_path / "quarantine").mkdir(exist_ok=True)
    path = tmp_path / pack_name(7)
    path.write_bytes(data)
    return os.open(path, os.O_RDWR), path


def _records(n: int) -> tuple[bytes, list[pf.Record]]:
    data = b"".join(b"".join(pf.encode(pf.PUT, STRIPES[i], i, 1000 + i, [bytes([i]) * 50]))
                    for i in range(n))
    return data, pf.scan(pf.bytes_reader(data), len(data)).records


def test_a_sealed_pack_is_read_from_its_footer(tmp_path: Path) -> None:
    data, recs = _records(3)
    data += pf.encode_footer(recs, len(data), 5)
    fd, path = _pack(tmp_path, data)
    try:
        got = recover(7, fd, tmp_path / "quarantine")
    finally:
        os.close(fd)
    assert got.sealed and got.records == recs and got.size == len(data)
    assert got.damage is None and path.read_bytes() == data


def test_a_torn_tail_is_kept_aside_and_cut_off(tmp_path: Path) -> None:
    data, recs = _records(2)
    torn = b"".join(pf.encode(pf.PUT, STRIPES[2], 2, 9, [b"never acknowledged"]))[:-3]
    fd, path = _pack(tmp_path, data + torn)
    try:
        got = recover(7, fd, tmp_path / "quarantine")
    finally:
        os.close(fd)
    assert not got.sealed and got.records == recs and got.size == len(data)
    assert got.damage is not None and got.damage.torn == (len(data), len(data) + len(torn))
    assert path.read_bytes() == data
    [aside] = (tmp_path / "quarantine").iterdir()
    assert aside.name.endswith(".torn") and aside.read_bytes() == torn


def test_damage_inside_is_reported_and_left_in_place(tmp_path: Path) -> None:
    data, recs = _records(3)
    flipped = bytearray(data)
    flipped[recs[1].offset + 10] ^= 0x40  # the middle record's head: its crc fails
    fd, path = _pack(tmp_path, bytes(flipped))
    try:
        got = recover(7, fd, tmp_path / "quarantine")
    finally:
        os.close(fd)
    assert [r.offset for r in got.records] == [recs[0].offset, recs[2].offset]
    assert got.damage is not None and got.damage.torn is None
    assert got.damage.gaps or got.damage.bad
    assert path.read_bytes() == bytes(flipped) and not list((tmp_path / "quarantine").iterdir())


def test_torn_tail_set_aside_then_appended_after(store: PackStore) -> None:
    asyncio.run(store.put(SIDS[0], [b"first"]))
    seq = store._active
    path = store.pack_dir / pack_name(seq)
    good = path.stat().st_size
    torn = b"".join(pf.encode(pf.PUT, bytes(16), 1, 1, [b"never acknowledged"]))[:-3]
    with open(path, "ab") as f:
        f.write(torn)
    again = reopen(store)
    try:
        assert read(again, SIDS[0]) == b"first"
        assert path.stat().st_size == good
        assert [(d.seq, d.torn) for d in again.damage] == [(seq, (good, good + len(torn)))]
        aside = list(again.quarantine_dir.glob("*.torn"))
        assert len(aside) == 1 and aside[0].read_bytes() == torn
        asyncio.run(again.put(SIDS[1], [b"second"]))
        third = reopen(again)
        assert read(third, SIDS[0]) == b"first" and read(third, SIDS[1]) == b"second"
        assert third.damage == []
        third.close()
    finally:
        again.close()
