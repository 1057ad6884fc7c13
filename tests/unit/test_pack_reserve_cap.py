"""review20i L3: a tombstone written on a full disk gives up a piece of the reserve and
tries again; when freeing blocks does not cure the full disk (another writer takes each
piece, or no inodes are left) it must fail after a few pieces, not drain the reserve."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from nodes import packstore
from nodes.packreserve import SLACK
from nodes.packstore import RELEASE_ROUNDS, PackStore

SID = f"{7:032x}.1"


def test_a_tombstone_on_an_incurable_full_disk_gives_up_only_a_few_pieces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = PackStore(tmp_path, reserve_bytes=4 << 20)
    s.open()
    try:
        asyncio.run(s.put(SID, [b"x" * 1000]))
        assert s.reserve.armed
        tries: list[int] = []

        def full(fd: int, parts: list, off: int) -> None:
            tries.append(off)
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(packstore, "writev_all", full)  # every freed piece taken at once
        with pytest.raises(OSError) as got:
            asyncio.run(s.delete(SID))
        print("tries:", len(tries), "held:", s.reserve.held, "of", s.reserve.size,
              "released:", s.reserve.released)
        assert got.value.errno == errno.ENOSPC
        assert s.reserve.released <= RELEASE_ROUNDS
        assert s.reserve.held >= s.reserve.size - RELEASE_ROUNDS * (SLACK + 4096)
        monkeypatch.undo()
        assert s.locate(SID) is not None  # the failed delete changed nothing
    finally:
        s.close()
