"""The power-loss harness's disk (`tests.volatile_disk`), without FUSE: a write is only in
its cache until a flush; the cut loses the cache, or with `keep:<seed>` writes an arbitrary
(seeded) subset of its 512-byte sectors first, so a test's disk may hold part of what was
written after the last flush, not all or nothing."""

from __future__ import annotations

from pathlib import Path

from tests.volatile_disk import CUT_XATTR, FILE_PATH, PAGE, SECTOR, VolatileDisk

PAGES = 8


def _disk(tmp_path: Path) -> tuple[VolatileDisk, Path]:
    tmp_path.mkdir(exist_ok=True)
    image = tmp_path / "image"
    image.write_bytes(bytes(PAGES * PAGE))
    return VolatileDisk(str(image)), image


def _sectors(raw: bytes) -> list[bool]:
    """Which sectors hold the written pattern (not zeros)."""
    return [raw[i:i + SECTOR] != bytes(SECTOR) for i in range(0, len(raw), SECTOR)]


def test_flushed_writes_stay_and_a_plain_cut_loses_the_rest(tmp_path: Path) -> None:
    d, image = _disk(tmp_path)
    d.write(FILE_PATH, b"\x01" * PAGE, 0, 0)
    d.fsync(FILE_PATH, 1, 0)
    d.write(FILE_PATH, b"\x02" * (3 * PAGE), PAGE, 0)
    d.setxattr(FILE_PATH, CUT_XATTR, b"1", 0)
    d.write(FILE_PATH, b"\x03" * PAGE, 5 * PAGE, 0)  # after the cut: nothing reaches it
    d.fsync(FILE_PATH, 1, 0)
    raw = image.read_bytes()
    assert raw[:PAGE] == b"\x01" * PAGE and raw[PAGE:] == bytes((PAGES - 1) * PAGE)


def test_a_cut_that_keeps_some_writes_keeps_a_seeded_strict_subset(tmp_path: Path) -> None:
    kept = []
    for run in range(2):
        d, image = _disk(tmp_path / str(run))
        d.write(FILE_PATH, b"\x02" * (4 * PAGE), 0, 0)
        d.setxattr(FILE_PATH, CUT_XATTR, b"keep:7", 0)
        d.fsync(FILE_PATH, 1, 0)
        raw = image.read_bytes()
        assert set(raw[:4 * PAGE]) <= {0, 2} and raw[4 * PAGE:] == bytes(4 * PAGE)
        kept.append(_sectors(raw[:4 * PAGE]))
    assert kept[0] == kept[1]  # the seed decides: a failing case replays
    assert 0 < sum(kept[0]) < len(kept[0])  # some sectors, not all
