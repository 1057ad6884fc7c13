"""review18d: `tessera fsck` must not answer "no errors" when it checked no shard, and must
not report errors on a healthy cluster because one PUT landed during its pass."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import storage.fsck
from storage.fsck import fsck
from storage.keyspace import STRIPE, object_key, space, stripe_index_key
from storage.records import ObjectVersion
from storage.shards.ids import shard_id
from storage.testing.simnodes import SimNodes
from tests.inproc import sim_cluster_s3, sim_config

BODY = b"z" * 70000


async def test_fsck_with_every_node_unreachable_is_not_a_clean_bill(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, 0)
    nodes = SimNodes(list(cfg.nodes))
    async with sim_cluster_s3(tmp_path, cfg, nodes, "bkt") as (cluster, s3):
        await asyncio.to_thread(s3.put_object, Bucket="bkt", Key="a", Body=BODY)
        item = await cluster.meta.get(object_key("bkt", "a"))
        p = ObjectVersion.decode(item.value).parts[0]  # type: ignore[union-attr]
        for i, n in enumerate(p.nodes):  # every copy of the object is gone for good ...
            nodes.lose(n, shard_id(p.stripe_id, i))  # type: ignore[arg-type]
        nodes.down |= {n.id for n in cfg.nodes}  # ... and no node answers the listing
        got = await fsck(cluster.meta, nodes, cfg.nodes)
        # was: exit 0 ("no errors"); now every copy is unchecked and the exit status says so
        assert got.status() == 2 and got.unchecked_copies == len(p.nodes), got.as_json()
        assert sorted(got.unreachable) == sorted(n.id for n in cfg.nodes)
        nodes.down.clear()  # the nodes answer again: the lost copies are an error
        got = await fsck(cluster.meta, nodes, cfg.nodes)
        assert got.status() == 1 and got.totals["unreadable"] == 1, got.as_json()


async def test_a_put_during_the_pass_is_not_an_error(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = sim_config(tmp_path, 0)
    nodes = SimNodes(list(cfg.nodes))
    async with sim_cluster_s3(tmp_path, cfg, nodes, "bkt") as (cluster, s3):
        await asyncio.to_thread(s3.put_object, Bucket="bkt", Key="a", Body=BODY)
        monkeypatch.setattr(storage.fsck, "PAGE", 1)
        real = cluster.meta.range
        fired: list[bool] = []

        async def range_(start: bytes, end: bytes, limit: int = 0) -> Any:
            if start >= b"P" and not fired:  # the pass is past the O records
                fired.append(True)
                await asyncio.to_thread(s3.put_object, Bucket="bkt", Key="a",
                                        Body=BODY[::-1])  # an ordinary overwrite
            return await real(start, end, limit=limit)

        monkeypatch.setattr(cluster.meta, "range", range_)
        got = await fsck(cluster.meta, nodes, cfg.nodes)
        assert fired
        assert got.errors == 0, got.as_json()  # was unindexed + dangling-index: exit 1


async def test_findings_racing_a_write_are_rechecked_not_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mend18d: an overwrite right after fsck read an object's record (so its stripe's index
    entry is gone when fsck looks) and a delete right after fsck read a stripe's index entry
    (so the manifest names nothing) are each a concurrent change, not `unindexed` or
    `dangling-index`: the fresh read of the record / entry shows it changed."""
    cfg = sim_config(tmp_path, 0)
    nodes = SimNodes(list(cfg.nodes))
    async with sim_cluster_s3(tmp_path, cfg, nodes, "bkt") as (cluster, s3):
        for key in ("a", "b"):
            await asyncio.to_thread(s3.put_object, Bucket="bkt", Key=key, Body=BODY)
        stripes = {}
        for key in ("a", "b"):
            item = await cluster.meta.get(object_key("bkt", key))
            stripes[key] = ObjectVersion.decode(item.value).parts[0].stripe_id  # type: ignore[union-attr]
        real_get, real_range = cluster.meta.get, cluster.meta.range
        fired: list[str] = []

        async def get(key: bytes) -> Any:
            if key == stripe_index_key(stripes["a"]) and "a" not in fired:
                fired.append("a")  # the record is read; now it is overwritten
                await asyncio.to_thread(s3.put_object, Bucket="bkt", Key="a",
                                        Body=BODY[::-1])
            if key == object_key("bkt", "b") and "X" in fired and "b" not in fired:
                fired.append("b")  # the second pass reads b's manifest: b is deleted
                await asyncio.to_thread(s3.delete_object, Bucket="bkt", Key="b")
            return await real_get(key)

        async def range_(start: bytes, end: bytes, limit: int = 0) -> Any:
            if start.startswith(space(STRIPE)[0]):
                fired.append("X")  # the second pass (index entries and shards) began
            return await real_range(start, end, limit=limit)

        monkeypatch.setattr(cluster.meta, "get", get)
        monkeypatch.setattr(cluster.meta, "range", range_)
        got = await fsck(cluster.meta, nodes, cfg.nodes)
        assert [f for f in fired if f != "X"] == ["a", "b"]
        assert got.errors == 0 and got.changed == 2, got.as_json()
