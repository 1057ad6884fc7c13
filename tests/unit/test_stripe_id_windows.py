"""New stripe ids name the current time window in their first two bytes, so the shards
written in one window share one fan-out leaf directory per node (`shards/<id[0:2]>/<id[2:4]>`):
a young node makes one leaf per window instead of one for nearly every shard."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nodes.disk import DiskShardStore
from storage.shards.ids import new_stripe_id, relative_path, shard_id
from tests.unit.test_fan_out_dirs import Counted
from tests.unit.test_shard_format import make_blocks, make_header, put, read_all

WINDOW_S = 1  # `ids.LEAF_WINDOW_S`


def _at(monkeypatch: pytest.MonkeyPatch, now: float) -> None:
    monkeypatch.setattr(time, "time", lambda: now)


def test_ids_drawn_in_one_window_share_their_leaf_and_nothing_else(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _at(monkeypatch, 1_800_000_000.25)
    drawn = [new_stripe_id() for _ in range(64)]
    assert all(len(s) == 16 for s in drawn)
    assert {s[:2] for s in drawn} == {(1_800_000_000 // WINDOW_S % 65536).to_bytes(2, "big")}
    assert len({s[2:] for s in drawn}) == 64  # the other 14 bytes random
    leaves = {relative_path(shard_id(s, 0)).rsplit("/", 1)[0] for s in drawn}
    assert len(leaves) == 1


def test_the_window_moves_on_and_wraps_after_65536(monkeypatch: pytest.MonkeyPatch) -> None:
    base = 65536 * WINDOW_S * 1000  # a window-0 start
    seen = []
    for step in (0, 1, 2, 65535, 65536):
        _at(monkeypatch, base + step * WINDOW_S + 0.5)
        seen.append(int.from_bytes(new_stripe_id()[:2], "big"))
    assert seen == [0, 1, 2, 65535, 0]


async def test_a_young_node_makes_one_leaf_for_a_windows_shards(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DiskShardStore(tmp_path)
    await store.start()
    counted = Counted(monkeypatch)
    _at(monkeypatch, 1_800_000_123.5)
    sids = []
    for _ in range(6):  # six objects' shards on this node within one window
        header = make_header(stripe=new_stripe_id())
        sids.append(await put(store, header, make_blocks(header, 2)))
    assert len(counted.mkdirs) == 1  # random ids: a leaf for nearly every one
    assert len({os.path.dirname(p) for p in counted.mkdirs}) == 1
    for sid in sids:
        assert await read_all(store, sid)
