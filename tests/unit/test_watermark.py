"""The replay watermark's file (storage/shards/watermark.py): two slots written in place,
the old text format still read, and a torn write never lowering the bound."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.shards.watermark import SIZE, SLOT, Watermark, read_watermark


def test_old_text_file_is_read_then_converted_once_and_written_in_place(tmp_path: Path) -> None:
    path = tmp_path / "replay-watermark"
    path.write_text("1733450000.250\n")  # format 1, as an older node left it
    wm = Watermark(path)
    assert wm.previous == wm.bound == 1733450000.25
    wm.cover(1733450005.0)
    inode = path.stat().st_ino
    assert path.stat().st_size == SIZE and read_watermark(path)[0] == wm.bound == 1733450007.0
    for d in (1733450010.0, 1733450020.0, 1733450030.5):
        wm.cover(d)
        assert read_watermark(path)[0] == wm.bound == d + 2.0
    assert path.stat().st_ino == inode  # no new file, no rename: overwritten in place
    assert not (tmp_path / "replay-watermark.tmp").exists()
    wm.close()
    again = Watermark(path)  # the next life starts from the last bound
    assert again.previous == 1733450032.5


def test_a_torn_newest_slot_leaves_the_previous_bound(tmp_path: Path) -> None:
    """A crash while a slot is written tears only that slot: the other one holds the bound
    before the write, which covers every date accepted until then."""
    path = tmp_path / "replay-watermark"
    wm = Watermark(path)
    wm.cover(100.0)
    wm.cover(200.0)
    _, seq, v2 = read_watermark(path)
    assert v2
    newest = (seq % 2) * SLOT
    data = bytearray(path.read_bytes())
    data[newest + 12] ^= 0xFF  # inside the bound: the CRC no longer matches
    path.write_bytes(data)
    assert read_watermark(path)[0] == 102.0
    assert Watermark(path).previous == 102.0


def test_no_valid_slot_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "replay-watermark"
    wm = Watermark(path)
    wm.cover(100.0)
    wm.close()
    data = bytearray(path.read_bytes())
    data[8] ^= 0xFF
    data[SLOT + 8] ^= 0xFF
    path.write_bytes(data)
    with pytest.raises(ValueError, match="unreadable replay watermark"):
        Watermark(path)


def test_a_failed_write_keeps_the_bound_and_rewrites_the_whole_file_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "replay-watermark"
    wm = Watermark(path)
    wm.cover(100.0)

    def failing(fd: int) -> None:
        raise OSError(5, "EIO")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError):
        wm.cover(200.0)
    assert wm.bound == 102.0  # not moved: the request dated 200 is refused
    monkeypatch.undo()
    inode = path.stat().st_ino
    wm.cover(300.0)
    assert wm.bound == read_watermark(path)[0] == 302.0
    assert path.stat().st_ino != inode  # rewritten whole (temporary file, rename)



def _torn_write(wm: Watermark, path: Path, when: float) -> None:
    """`wm.cover(when)` written in place, then torn as by a crash mid-write."""
    before = path.read_bytes()
    wm.cover(when)
    after = bytearray(path.read_bytes())
    changed = [i for i in (0, 1) if before[i * SLOT:(i + 1) * SLOT] != after[i * SLOT:(i + 1) * SLOT]]
    assert len(changed) == 1  # one slot written
    after[changed[0] * SLOT:changed[0] * SLOT + 8] = b"\0" * 8
    path.write_bytes(after)


@pytest.mark.parametrize("writes_before_failure", [1, 2])
def test_after_a_whole_rewrite_torn_writes_across_a_restart_leave_a_valid_slot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writes_before_failure: int) -> None:
    """Whatever the sequence number of the whole-file rewrite after an error, the in-place
    writes that follow overwrite the older slot. The rewrite once put its newest record
    where the next write went when that number was even: a torn write, a restart and a
    second torn write then left no valid slot, and the node refused to start."""
    path = tmp_path / "replay-watermark"
    wm = Watermark(path)
    for i in range(writes_before_failure):
        wm.cover(100.0 + i)

    def failing(fd: int) -> None:
        raise OSError(5, "EIO")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError):
        wm.cover(200.0)
    monkeypatch.undo()
    wm.cover(300.0)  # the whole-file rewrite
    _, rewrite_seq, _ = read_watermark(path)
    _torn_write(wm, path, 400.0)
    assert read_watermark(path)[:2] == (302.0, rewrite_seq)  # the newest record survived
    wm.close()
    again = Watermark(path)  # the next life
    _torn_write(again, path, 500.0)
    assert read_watermark(path)[0] == 302.0
    again.close()
