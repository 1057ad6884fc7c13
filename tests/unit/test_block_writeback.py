"""The kernel's write-back budget for a volume's FUSE mount (gateway/block/writeback.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.block import writeback


@pytest.fixture
def bdi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake /sys/class/bdi holding the directory of tmp_path's own device."""
    root = tmp_path / "bdi"
    dev = os.stat(tmp_path).st_dev
    d = root / f"{os.major(dev)}:{os.minor(dev)}"
    d.mkdir(parents=True)
    for name in ("max_bytes", "min_bytes"):
        (d / name).write_text("0")
    monkeypatch.setattr(writeback, "BDI_ROOT", root)
    return d


def test_budget_sets_the_bound_and_half_of_it_as_the_floor(bdi: Path, tmp_path: Path) -> None:
    assert writeback.bdi_dir(tmp_path) == bdi
    assert writeback.set_budget(tmp_path, 512) is None
    assert int((bdi / "max_bytes").read_text()) == 512 << 20
    assert int((bdi / "min_bytes").read_text()) == 256 << 20


def test_a_refused_floor_keeps_the_bound_and_says_why(bdi: Path, tmp_path: Path) -> None:
    (bdi / "min_bytes").unlink()
    (bdi / "min_bytes").mkdir()  # writing it fails, as the kernel's EINVAL would
    why = writeback.set_budget(tmp_path, 64)
    assert why is not None and "min_bytes" in why and "no floor" in why
    assert int((bdi / "max_bytes").read_text()) == 64 << 20


def test_no_knobs_is_a_reason_not_an_error(bdi: Path, tmp_path: Path) -> None:
    for f in bdi.iterdir():
        f.unlink()
    bdi.rmdir()
    why = writeback.set_budget(tmp_path, 64)
    assert why is not None and "max_bytes" in why
