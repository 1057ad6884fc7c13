"""packs22: a restart never indexes a punched record. When the newer record of a replaced
shard is lost (its pack gone, or its trailer rotted), the older record that punching zeroed
is not taken back as the shard (a corrupt, checksummed shard served): the shard is missing,
so the repair sweep's stat gets 404 and rebuilds it."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

from nodes import packformat as pf
from nodes.packpunch import body_punched, hole_ranges, punch_hole
from nodes.packrecovery import pack_name
from nodes.packstore import PackStore

BODY = 64 * 1024 + 100  # whole blocks inside each body to punch
SID, OTHER = f"{7:032x}.2", f"{8:032x}.3"


def _body(tag: str) -> bytes:
    return random.Random(tag).randbytes(BODY)


def _store(root: Path) -> PackStore:
    s = PackStore(root, seal_bytes=BODY + pf.OVERHEAD, compact_ratio=0.0, reserve_bytes=0)
    s.open()
    return s


def _replace_punch_close(root: Path) -> int:
    """SID v1 in one pack, v2 in the next, OTHER after; v1 punched: v2's pack number."""
    s = _store(root)
    try:
        asyncio.run(s.put(SID, [_body("v1")]))
        first = s.locate(SID).seq  # type: ignore[union-attr]
        asyncio.run(s.put(SID, [_body("v2")], replace=True))
        second = s.locate(SID).seq  # type: ignore[union-attr]
        asyncio.run(s.put(OTHER, [_body("other")]))
        assert first < second < s.locate(OTHER).seq  # type: ignore[union-attr]
        assert asyncio.run(s.punch(min_dead=0)) > 0  # v1's body given back
        return second
    finally:
        s.close()


def test_a_punched_record_is_never_indexed_when_its_newer_pack_is_lost(tmp_path: Path) -> None:
    second = _replace_punch_close(tmp_path)
    (tmp_path / "packs" / pack_name(second)).unlink()
    again = _store(tmp_path)
    try:
        loc = again.locate(SID)
        print("lost pack", second, "missing:", again.missing, "SID located at", loc)
        assert again.missing == [second]
        assert loc is None  # missing (repair rebuilds it), not v1's zeros
        assert again.read(again.locate(OTHER)) == _body("other")  # type: ignore[arg-type]
    finally:
        again.close()


def test_a_punched_record_is_never_indexed_when_its_newer_record_rots(tmp_path: Path) -> None:
    second = _replace_punch_close(tmp_path)
    path = tmp_path / "packs" / pack_name(second)
    raw = bytearray(path.read_bytes())
    raw[pf.HEAD_BYTES + BODY] ^= 0xFF  # v2's trailer: a bad record, not applied (its
    path.write_bytes(bytes(raw[:pf.OVERHEAD + BODY]))  # footer gone too: scanned)
    again = _store(tmp_path)
    try:
        assert [d.seq for d in again.damage if d.harmful] == [second]
        assert again.locate(SID) is None
    finally:
        again.close()


def test_body_punched_sees_only_a_hole_inside_the_body(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(16 * 4096))
    fd = os.open(path, os.O_RDWR)
    try:
        punch_hole(fd, 8 * 4096, 4096)
        holes = hole_ranges(fd, 16 * 4096)
        assert holes == [(8 * 4096, 9 * 4096)]

        def rec(off: int, n: int) -> pf.Record:
            return pf.Record(pf.PUT, b"\0" * 16, 0, 0, off - pf.HEAD_BYTES, n)
        assert body_punched(holes, rec(7 * 4096, 2 * 4096), 4096)
        assert body_punched(holes, rec(8 * 4096 + 10, 4096), 4096) is False  # no whole block
        assert not body_punched(holes, rec(0, 8 * 4096), 4096)
        assert not body_punched(holes, rec(9 * 4096, 4 * 4096), 4096)
    finally:
        os.close(fd)
