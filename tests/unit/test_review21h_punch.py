"""review21h: packed-shard hole punching after a restart (a re-punch is paced in steps;
a failed group's start survives the restart so the durable copy it replaced is never punched)."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from nodes import packformat as pf
from nodes import packstore
from nodes.packstore import PackStore

BODY = 64 * 1024 + 100


def _body(tag: str) -> bytes:
    return random.Random(tag).randbytes(BODY)


def _eio(*_: object) -> None:
    raise OSError(5, "EIO")


def test_a_re_punch_after_a_restart_lets_puts_go_between_packs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart forgets `_punched_dead`, so every pack is punched again; a body already a
    hole is skipped without counting toward a step, so the whole pass over every pack (an
    lseek a record: about 4 us each, 0.23 s for 56,500 records here) is ONE committer step
    and every PUT and DELETE on the disk waits for it (before mend21f: a step a pack)."""
    from nodes import packformat as pf
    from nodes import packpunch
    body, per, packs = 9 * 1024, 20, 8
    seal = per * (body + pf.OVERHEAD)
    s = PackStore(tmp_path, seal_bytes=seal, reserve_bytes=0)
    s.open()
    try:
        sids = [f"{i:032x}.1" for i in range(1, per * packs + 1)]
        for sid in sids:
            asyncio.run(s.put(sid, [b"z" * body]))
        for sid in sids:
            asyncio.run(s.delete(sid))
        assert asyncio.run(s.punch(min_dead=0)) > 0
    finally:
        s.close()
    again = PackStore(tmp_path, seal_bytes=seal, reserve_bytes=0)
    again.open()
    try:
        events: list[str] = []
        put: list[object] = []
        real = packpunch._is_hole

        def is_hole(fd: int, lo: int, hi: int) -> bool:
            if not put:  # a PUT arrives during the re-punch's first step
                fut = again._enqueue(pf.PUT, f"{10**6:032x}.1", [b"x" * 100], False, None)
                fut.add_done_callback(lambda _: events.append("put"))
                put.append(fut)
            events.append("hole")
            return real(fd, lo, hi)
        monkeypatch.setattr(packpunch, "_is_hole", is_hole)
        asyncio.run(again.punch(min_dead=0))
        assert put and put[0].result() == -1  # type: ignore[attr-defined]
        done = events.index("put")
        print("hole checks before the PUT:", done, "after:", len(events) - done - 1)
        assert done <= packpunch.STEP_RECORDS, "the PUT waited for the whole re-punch pass"
    finally:
        again.close()


def test_a_restart_does_not_punch_the_durable_copy_a_failed_group_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = f"{7:032x}.1"
    s = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    s.open()
    try:
        asyncio.run(s.put(sid, [_body("v1")]))  # acknowledged, durable
        seq = s._active
        start = s.sizes[seq]  # what the disk durably holds of pack `seq`
        with monkeypatch.context() as m:
            m.setattr(os, "ftruncate", _eio)
            m.setattr(os, "fdatasync", _eio)
            with pytest.raises(OSError):  # the replace fails; so does its cut-back
                asyncio.run(s.put(sid, [_body("v2")], replace=True))
        assert s._unsure == {seq: start}
    finally:
        s.close()
    again = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)  # a process restart
    again.open()
    try:
        assert again.locate(sid).seq == seq  # type: ignore[union-attr]
        asyncio.run(again.punch(min_dead=0))
    finally:
        again.close()
    os.truncate(again.path_of(seq), start)  # a power cut: the failed group was never durable
    last = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    last.open()
    try:
        got = last.read(last.locate(sid))  # type: ignore[arg-type]
        print("after the power cut: v1", got == _body("v1"), "zeroed blocks",
              sum(got[i:i + 4096] == bytes(4096) for i in range(0, len(got), 4096)))
        assert got == _body("v1")  # the acknowledged copy, never a punched one
    finally:
        last.close()




def test_an_unsure_mark_is_used_once_and_its_pack_gets_no_more_appends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The restart after a failed group cuts it off (kept in quarantine), clears the mark and
    writes on in a new pack: a later restart indexes every later PUT (a mark left, or an
    append to the marked pack, would cut acknowledged records)."""
    sid, later = f"{7:032x}.1", f"{8:032x}.1"
    s = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    s.open()
    try:
        asyncio.run(s.put(sid, [_body("v1")]))
        seq = s._active
        with monkeypatch.context() as m:
            m.setattr(os, "ftruncate", _eio)
            m.setattr(os, "fdatasync", _eio)
            m.setattr(packstore, "fsync_dir", _eio)  # no new pack: the marked one is last
            with pytest.raises(OSError):
                asyncio.run(s.put(sid, [_body("v2")], replace=True))
        assert {q: m[:2] for q, m in s.unsure.load().items()} == {
            seq: (s.sizes[seq] - len(_body("v2")) - pf.OVERHEAD, s.sizes[seq])}
    finally:
        s.close()
    assert max(int(p.stem, 16) for p in s.pack_dir.glob("*.pack")) == seq
    again = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    again.open()
    try:
        assert not again.unsure.path.exists() or again.unsure.load() == {}
        assert any(p.name.endswith(".unsure") for p in again.quarantine_dir.iterdir())
        asyncio.run(again.put(later, [_body("later")]))
        assert again.locate(later).seq != seq  # type: ignore[union-attr]
    finally:
        again.close()
    last = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    last.open()
    try:
        assert last.read(last.locate(sid)) == _body("v1")  # type: ignore[arg-type]
        assert last.read(last.locate(later)) == _body("later")  # type: ignore[arg-type]
    finally:
        last.close()


def test_a_torn_tail_in_a_pack_not_the_newest_is_harmful(tmp_path: Path) -> None:
    """Only the newest pack is written at its end: a sealed pack that lost its end lost its
    footer and acknowledged records, so `pack_damage` counts it; a torn newest pack is a
    write in flight at a crash and is not counted (review21h H3)."""
    from nodes import packformat as pf
    body = 9 * 1024
    s = PackStore(tmp_path, seal_bytes=4 * (body + pf.OVERHEAD), reserve_bytes=0)
    s.open()
    try:
        for i in range(1, 10):
            asyncio.run(s.put(f"{i:032x}.1", [b"b" * body]))
        first, newest = min(s.sizes), s._active
        first_size, newest_size = s.sizes[first], s.sizes[newest]
    finally:
        s.close()
    os.truncate(s.path_of(first), first_size - 5000)  # a sealed pack lost its end
    with open(s.path_of(newest), "ab") as f:  # a write in flight at a crash
        f.write(b"x" * 100)
    again = PackStore(tmp_path, seal_bytes=4 * (body + pf.OVERHEAD), reserve_bytes=0)
    again.open()
    try:
        got = {d.seq: d.harmful for d in again.damage}
        print("damage (seq: harmful):", got, "newest", newest, "size", newest_size)
        assert got == {first: True, newest: False}
    finally:
        again.close()


def test_an_unsaved_drop_record_cut_does_not_hide_a_new_packs_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packs 5 and 6 were dropped, then the newest packs (4 up) lost; the open that cuts
    those marks cannot save the cut (ENOSPC). The store must not number new packs under the
    marks left on disk: else losing one of them later is hidden (review21h H4)."""
    from nodes import packformat as pf
    from nodes.packdrops import Drops
    body = 9 * 1024
    seal = 2 * (body + pf.OVERHEAD)

    def store() -> PackStore:
        return PackStore(tmp_path, seal_bytes=seal, reserve_bytes=0)
    s = store()
    s.open()
    try:
        for i in range(1, 6):
            asyncio.run(s.put(f"{i:032x}.1", [b"a" * body]))
        assert s._active == 3
    finally:
        s.close()
    old = Drops(s.pack_dir)
    old.ranges = [(5, 6)]
    old._save()

    def full(*_: object) -> None:
        raise OSError(28, "ENOSPC")
    again = store()
    with monkeypatch.context() as m:
        m.setattr(os, "replace", full)
        again.open()
    try:
        for i in range(6, 12):
            asyncio.run(again.put(f"{i:032x}.1", [b"b" * body]))
        made = sorted(seq for seq in again.sizes if seq > 3)
    finally:
        again.close()
    lost = made[1]
    os.unlink(again.path_of(lost))
    last = store()
    last.open()
    try:
        print("new packs", made, "lost", lost, "missing", last.missing)
        assert lost in last.missing
    finally:
        last.close()


async def test_a_failed_punch_after_a_full_disk_keeps_compactions_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a full disk the compactor still punches; a punch that fails then must not replace
    the ENOSPC compaction raised (review21h H5)."""
    from types import SimpleNamespace

    from nodes.packcompact import Compactor
    from storage.config import PackSettings
    packs = PackStore(tmp_path, seal_bytes=1 << 20, reserve_bytes=0)
    packs.open()
    try:
        async def compact(pace: float | None = None) -> int:
            raise OSError(28, "compaction found the disk full")

        async def punch(min_dead: int | None = None, pace: float | None = None) -> int:
            raise OSError(5, "the punch failed")
        monkeypatch.setattr(packs, "candidates", lambda: [1])
        monkeypatch.setattr(packs, "compact", compact)
        monkeypatch.setattr(packs, "punch", punch)
        compactor = Compactor(SimpleNamespace(packs=packs), PackSettings(),  # type: ignore[arg-type]
                              None)  # type: ignore[arg-type]
        with pytest.raises(OSError) as got:
            await compactor.run_once()
        assert got.value.errno == 28
    finally:
        packs.close()


def test_an_uncleared_unsure_mark_never_lands_on_a_new_pack(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A marked pack lost, then an open that cannot clear the mark (ENOSPC): a new pack
    taking the marked number would be cut at the mark by the next open (H1 with H4's rule)."""
    sid, later = f"{7:032x}.1", f"{8:032x}.1"

    def store() -> PackStore:
        return PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    s = store()
    s.open()
    try:
        asyncio.run(s.put(f"{6:032x}.1", [_body("first")]))
        seq = s._active
        s._seal(seq)  # a sealed pack below the one that will be lost
        asyncio.run(s.put(sid, [_body("v1")]))
        seq = s._active
        with monkeypatch.context() as m:
            m.setattr(os, "ftruncate", _eio)
            m.setattr(os, "fdatasync", _eio)
            m.setattr(packstore, "fsync_dir", _eio)
            with pytest.raises(OSError):
                asyncio.run(s.put(sid, [_body("v2")], replace=True))
    finally:
        s.close()
    os.unlink(s.path_of(seq))  # the marked pack is lost
    again = store()
    with monkeypatch.context() as m:
        m.setattr(os, "replace", _eio)
        again.open()
    try:
        asyncio.run(again.put(later, [_body("later")]))
        assert again.locate(later).seq > seq  # type: ignore[union-attr]
    finally:
        again.close()
    last = store()
    last.open()
    try:
        assert last.read(last.locate(later)) == _body("later")  # type: ignore[arg-type]
    finally:
        last.close()


def test_a_stale_unsure_mark_after_a_downgrade_never_cuts_acknowledged_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """packs22: code from before `packs/unsure` ignores the mark and leaves it in place: a
    node downgraded after a failed cut-back indexes the failed group and writes on after it
    in that (newest) pack, acknowledged. Upgraded again, the mark no longer says where the
    failed group is (records of later writes after it): it is dropped, never applied, so
    those acknowledged records stay."""
    sid, later = f"{7:032x}.1", f"{8:032x}.1"
    s = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    s.open()
    try:
        asyncio.run(s.put(sid, [_body("v1")]))
        seq = s._active
        with monkeypatch.context() as m:
            m.setattr(os, "ftruncate", _eio)
            m.setattr(os, "fdatasync", _eio)
            m.setattr(packstore, "fsync_dir", _eio)  # no new pack: the marked one is last
            with pytest.raises(OSError):
                asyncio.run(s.put(sid, [_body("v2")], replace=True))
    finally:
        s.close()
    records = _hide_marks(s)  # the downgraded node: it never reads the mark (ignores it) ...
    old = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    old.open()
    try:
        asyncio.run(old.put(later, [_body("later")]))  # ... and writes on in that pack
        assert old.locate(later).seq == seq  # type: ignore[union-attr]
    finally:
        old.close()
    _restore(records)  # ... and leaves the mark in place
    new = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    new.open()
    try:
        loc = new.locate(later)
        print("after the upgrade: later located at", loc, "quarantined:",
              sorted(p.name for p in new.quarantine_dir.iterdir()))
        assert loc is not None and new.read(loc) == _body("later")
        assert not any(p.name.endswith(".unsure") for p in new.quarantine_dir.iterdir())
        assert new.unsure.load() == {}
    finally:
        new.close()


def _hide_marks(s: PackStore) -> dict[Path, bytes]:
    """The mark and its side record taken away (what code from before them never reads)."""
    out = {p: p.read_bytes() for p in (s.unsure.path, s.pack_dir / "unsure-group")
           if p.exists()}
    for p in out:
        p.unlink()
    return out


def _restore(records: dict[Path, bytes]) -> None:
    for p, raw in records.items():
        p.write_bytes(raw)


def _failed_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sid: str
                     ) -> tuple[PackStore, int, int]:
    """A store whose replace of `sid` failed and could not be cut back: the store, the
    marked pack and where the failed group begins."""
    s = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    s.open()
    try:
        asyncio.run(s.put(sid, [_body("v1")]))
        seq = s._active
        start = s.sizes[seq]
        with monkeypatch.context() as m:
            m.setattr(os, "ftruncate", _eio)
            m.setattr(os, "fdatasync", _eio)
            m.setattr(packstore, "fsync_dir", _eio)  # no new pack: the marked one is last
            with pytest.raises(OSError):
                asyncio.run(s.put(sid, [_body("v2")], replace=True))
    finally:
        s.close()
    return s, seq, start


def test_session_21_reads_the_mark_a_failed_cut_back_leaves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """review22e L5: a one-step downgrade (session 21's `Unsure.load`: head
    `tessera-pack-unsure 1`, lines `seq start`) reads the mark and cuts the failed group; a
    format it cannot read "fails its check", is ignored, and the group is indexed (H1)."""
    from nodes.smallrecord import pairs, read_record
    s, seq, start = _failed_cut_back(tmp_path, monkeypatch, f"{7:032x}.1")
    exists, body = read_record(s.unsure.path, b"tessera-pack-unsure 1 ")
    assert exists and body is not None and pairs(body) == [(seq, start)], body


def test_a_stale_mark_is_found_without_trusting_the_clock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """review22e L5: code from before the mark cut the failed group's torn tail, then wrote
    an acknowledged record inside the group's range, its clock stepped back (a write time
    older than the group's). That record is not one of the group's (offset and head): the
    mark is dropped, never applied, the record stays."""
    sid, later = f"{7:032x}.1", f"{8:032x}.1"
    s, seq, start = _failed_cut_back(tmp_path, monkeypatch, sid)
    records = _hide_marks(s)
    os.truncate(s.path_of(seq), start)  # the downgraded node cut the group as a torn tail
    old = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    old.open()
    try:
        with monkeypatch.context() as m:  # its clock an hour behind
            m.setattr(packstore.time, "time_ns", lambda: 1_000_000_000)
            asyncio.run(old.put(later, [b"x" * 1000]))
        assert old.locate(later).seq == seq  # type: ignore[union-attr]
    finally:
        old.close()
    _restore(records)
    new = PackStore(tmp_path, seal_bytes=1 << 24, reserve_bytes=0)
    new.open()
    try:
        loc = new.locate(later)
        print("after the upgrade: later located at", loc)
        assert loc is not None and new.read(loc) == b"x" * 1000
        assert new.read(new.locate(sid)) == _body("v1")  # type: ignore[arg-type]
    finally:
        new.close()


def test_a_first_format_unsure_mark_is_still_read(tmp_path: Path) -> None:
    """packs22: a mark session 21 wrote (no side entry) is still applied as before."""
    from nodes.packunsure import _HEAD, Unsure, stale
    from nodes.smallrecord import write_record
    tmp_path.mkdir(exist_ok=True)
    write_record(tmp_path / "unsure", _HEAD, b"3 100\n")
    u = Unsure(tmp_path)
    assert u.load() == {3: (100, None, None)}
    assert not stale(lambda off, n: b"", 500, (100, None, None))
