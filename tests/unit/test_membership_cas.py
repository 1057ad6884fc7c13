"""A membership change decided on what a node's record showed applies only if the record
still shows it (review19c M1 b): a forced removal planned on a draining node never
overwrites an `activate` (or a drain begun again) made while the plan ran."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage import membership as ms
from storage.config import Config
from storage.config_sections import NodeSpec
from storage.errors import Conflict
from storage.metadata.sqlite import SqliteStore


def _cfg(tmp_path: Path) -> Config:
    return Config(data_dir=tmp_path, nodes=(NodeSpec("n1", "az1", "127.0.0.1:9100"),),
                  profiles={})


def test_a_removal_planned_on_a_drain_does_not_overwrite_an_activate(tmp_path: Path) -> None:
    async def run() -> None:
        meta = await SqliteStore.open(tmp_path / "m.db")
        try:
            cfg = _cfg(tmp_path)
            seen = await ms.set_state(meta, cfg, "n1", ms.DRAINING)  # what the plan saw
            await ms.set_state(meta, cfg, "n1", ms.ACTIVE)  # an activate meanwhile
            with pytest.raises(Conflict, match="changed meanwhile"):
                await ms.set_state(meta, cfg, "n1", ms.REMOVED, expect=seen)
            assert (await ms.get_member(meta, cfg, "n1")).state == ms.ACTIVE
            again = await ms.set_state(meta, cfg, "n1", ms.DRAINING)  # drained again: new
            with pytest.raises(Conflict, match="changed meanwhile"):
                await ms.set_state(meta, cfg, "n1", ms.REMOVED, expect=seen)
            done = await ms.set_state(meta, cfg, "n1", ms.REMOVED, expect=again)
            assert done.state == ms.REMOVED
        finally:
            await meta.close()

    asyncio.run(run())
