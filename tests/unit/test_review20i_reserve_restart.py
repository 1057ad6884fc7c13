"""review20i: the reserve is given up a piece at a time so the rest stays held for
compaction; but a restart on a still-full disk starts from held = 0, its `arm` fails and
cuts the reserve file to 0: what was still held goes to the file system's free space, where
any other writer (shard files above max_shard_bytes, another node) may take it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from nodes import packreserve
from nodes.packreserve import Reserve


def test_a_restart_on_a_full_disk_keeps_what_the_reserve_still_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = Reserve(tmp_path / "reserve", 1 << 20)
    assert r.open()
    assert r.release(300 << 10)  # a full disk took part of it
    kept = r.held

    def full(fd: int, off: int, n: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(packreserve.os, "posix_fallocate", full)  # still full at the restart
    again = Reserve(tmp_path / "reserve", 1 << 20)
    assert not again.open()
    print("held before:", kept, "after restart:", again.held,
          "file:", os.stat(again.path).st_size)
    assert again.held == kept and os.stat(again.path).st_size == kept
