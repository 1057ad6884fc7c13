"""mend21f: the node's compactor punches after a compaction that ended normally or found
the disk full (punching needs no room), never after one that failed otherwise or was
cancelled (review21f F2: a stopping node must not wait for a punch pass)."""

from __future__ import annotations

import errno
from pathlib import Path
from types import SimpleNamespace

import pytest

from nodes.packcompact import Compactor
from nodes.packstore import PackStore
from storage.config import PackSettings


@pytest.mark.parametrize(("err", "punched"),
                         [(None, True), (errno.ENOSPC, True), (errno.EIO, False)])
async def test_a_compaction_punches_after_it_ends_or_finds_the_disk_full(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int | None, punched: bool) -> None:
    """And the punch goes at compaction's pace (review21f F3: it was unpaced)."""
    packs = PackStore(tmp_path, seal_bytes=1 << 20, reserve_bytes=0)
    packs.open()
    try:
        calls: list[str] = []

        async def compact(pace: float | None = None) -> int:
            if err is None:
                return 5
            raise OSError(err, "compaction failed")

        async def punch(min_dead: int | None = None, pace: float | None = None) -> int:
            calls.append(f"punch at {pace}")
            return 0
        monkeypatch.setattr(packs, "candidates", lambda: [1])
        monkeypatch.setattr(packs, "compact", compact)
        monkeypatch.setattr(packs, "punch", punch)
        settings = PackSettings(compact_rate_bytes_s=1234)
        compactor = Compactor(SimpleNamespace(packs=packs), settings,  # type: ignore[arg-type]
                              None)  # type: ignore[arg-type]
        if err is None:
            assert await compactor.run_once() == 5
        else:
            with pytest.raises(OSError) as got:
                await compactor.run_once()
            assert got.value.errno == err  # compaction's own error, never the punch's
        assert calls == (["punch at 1234"] if punched else [])
    finally:
        packs.close()
