"""A commit indexing a fresh stripe compares ONE record, the membership epoch, however many
nodes the stripe names; only a removal moves it, so a drain or an activation fails no
commit; after a failed commit the map is re-read only when the epoch moved (review20b L3,
L4: nine compares per commit cost etcd 25-45% CPU, and every failed multipart, archive or
volume commit re-read the whole map)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import commit_nodes
from storage import membership as ms
from storage.config import Config
from storage.config_sections import NodeSpec
from storage.errors import NodeRemoved
from storage.health import HealthTracker
from storage.metadata import Txn
from storage.metadata.sqlite import SqliteStore


async def test_one_compare_only_removals_move_and_no_needless_reread(tmp_path: Path) -> None:
    cfg = Config(data_dir=tmp_path, nodes=tuple(
        NodeSpec(f"n{i}", f"az{i % 3}", f"127.0.0.{i}:9100") for i in range(1, 7)), profiles={})
    meta = await SqliteStore.open(tmp_path / "m.db")
    ranges = []
    plain_range = meta.range

    async def counted(*args, **kw):  # type: ignore[no-untyped-def]
        ranges.append(args[0])
        return await plain_range(*args, **kw)
    try:
        h = HealthTracker(cfg.nodes, None)  # type: ignore[arg-type]
        await ms.refresh(meta, cfg, h)
        compares: dict[bytes, int] = {}
        commit_nodes.guard(h, [n.id for n in cfg.nodes], compares)
        assert len(compares) == 1, "one compare per commit, not one per named node"
        meta.range = counted  # type: ignore[method-assign]
        await ms.set_state(meta, cfg, "n1", ms.DRAINING)
        await ms.set_state(meta, cfg, "n1", ms.ACTIVE)
        assert await meta.txn(Txn(compares=compares)), "a drain and an activate failed it"
        ranges.clear()
        await commit_nodes.recheck(meta, cfg, h, compares)  # (a commit failed on another
        assert ranges == [], "the map was re-read though no node was removed"  # compare)
        await ms.set_state(meta, cfg, "n2", ms.REMOVED)
        assert not await meta.txn(Txn(compares=compares)), "a removal did not fail it"
        ranges.clear()
        await commit_nodes.recheck(meta, cfg, h, compares)
        assert len(ranges) == 1 and not h.is_member("n2")  # re-read once, applied
        with pytest.raises(NodeRemoved):
            commit_nodes.guard(h, ["n1", "n2"], {})
        members = await ms.load_members(meta, cfg)  # the epoch record is no member
        assert sorted(m.spec.id for m in members) == [f"n{i}" for i in range(1, 7)]
    finally:
        await meta.close()
