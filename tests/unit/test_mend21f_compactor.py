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


@pytest.mark.parametrize(("err", "punched"), [(errno.ENOSPC, True), (errno.EIO, False)])
async def test_a_failed_compaction_punches_only_when_the_disk_was_full(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, punched: bool) -> None:
    packs = PackStore(tmp_path, seal_bytes=1 << 20, reserve_bytes=0)
    packs.open()
    try:
        calls: list[str] = []

        async def compact(pace: float | None = None) -> int:
            raise OSError(err, "compaction failed")

        async def punch(min_dead: int | None = None, pace: float | None = None) -> int:
            calls.append("punch")
            return 0
        monkeypatch.setattr(packs, "candidates", lambda: [1])
        monkeypatch.setattr(packs, "compact", compact)
        monkeypatch.setattr(packs, "punch", punch)
        compactor = Compactor(SimpleNamespace(packs=packs), PackSettings(),  # type: ignore[arg-type]
                              None)  # type: ignore[arg-type]
        with pytest.raises(OSError) as got:
            await compactor.run_once()
        assert got.value.errno == err  # compaction's own error, never the punch's
        assert calls == (["punch"] if punched else [])
    finally:
        packs.close()
