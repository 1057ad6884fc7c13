"""`tessera fsck` (storage/fsck.py) says nothing is wrong on a consistent cluster, and names
each kind of damage a crash or a bug could leave: a stripe with too few copies, a stripe
with no index entry, an index entry naming nothing, parts of no upload, volume pointers of
no volume; orphan shards and missing redundancy only as warnings. The real object service
and metadata store over simulated nodes; the damage is made by hand."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ops.fsckcli import render
from storage.fsck import fsck
from storage.keyspace import extent_key, object_key, part_key, stripe_index_key
from storage.records import ObjectVersion, pack
from storage.shards.ids import shard_id
from storage.testing.simnodes import SimNodes
from tests.inproc import sim_cluster_s3, sim_config

BODY = b"z" * 70000  # one small stripe
NOBODY, STRAY = b"\x01" * 16, b"\x03" * 16


async def test_fsck_is_clean_then_names_each_damage(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, 0)
    nodes = SimNodes(list(cfg.nodes))
    async with sim_cluster_s3(tmp_path, cfg, nodes, "bkt") as (cluster, s3):
        for key in ("a", "b", "c"):
            await asyncio.to_thread(s3.put_object, Bucket="bkt", Key=key, Body=BODY)
        up = await asyncio.to_thread(s3.create_multipart_upload, Bucket="bkt", Key="m")
        await asyncio.to_thread(s3.upload_part, Bucket="bkt", Key="m", PartNumber=1,
                                UploadId=up["UploadId"], Body=BODY)
        clean = await fsck(cluster.meta, nodes, cfg.nodes)
        assert clean.errors == 0 and not clean.findings, clean.lines()
        assert clean.counts["stripes indexed"] == 4 and clean.status() == 0

        async def stripe(key: str) -> tuple[bytes, list[str | None]]:
            item = await cluster.meta.get(object_key("bkt", key))
            assert item is not None
            p = ObjectVersion.decode(item.value).parts[0]
            return p.stripe_id, list(p.nodes)

        a, a_nodes = await stripe("a")
        for i in range(3):  # 3 of 6 copies gone at 4+2: unreadable
            assert nodes.lose(a_nodes[i], shard_id(a, i))  # type: ignore[arg-type]
        b, b_nodes = await stripe("b")
        assert nodes.lose(b_nodes[5], shard_id(b, 5))  # type: ignore[arg-type]
        c, _ = await stripe("c")
        await cluster.meta.delete(stripe_index_key(c))
        await cluster.meta.put(stripe_index_key(NOBODY), pack({"state": "live"}))
        await cluster.meta.put(part_key("no-such-upload", 1), (await cluster.meta.range(
            *_parts(up["UploadId"]), limit=1))[0].value)
        await cluster.meta.put(extent_key("no-such-volume", 0, 1),
                               pack({"trim": True}))
        nodes.files["n1"][shard_id(STRAY, 0)] = bytearray(b"x")
        got = await fsck(cluster.meta, nodes, cfg.nodes)
        f = got.findings
        assert [x.split(":")[0] for x in f["unreadable"]] == [f"stripe {a.hex()} of bkt/a@null"]
        assert f["degraded"] == [f"stripe {b.hex()} of bkt/b@null: 5 of 6 copies"]
        assert f["unindexed"] == [f"stripe {c.hex()} of bkt/c@null"]
        assert f["dangling-index"] == [f"stripe {NOBODY.hex()}"]
        assert f["parts-without-upload"] == ["upload no-such-upload: 1 part(s)"]
        assert f["volume-leftovers"] == ["volume no-such-volume: 1 record(s)"]
        assert f["orphan-shards"] == [f"stripe {STRAY.hex()}: 1 shard(s)"]
        assert got.errors == 5 and got.status() == 1
        assert any(line.split() == ["ERROR", "unreadable", "1"]
                   for line in render(got).splitlines())


def _parts(upload_id: str) -> tuple[bytes, bytes]:
    from storage.keyspace import part_prefix, span
    return span(part_prefix(upload_id))


async def test_a_current_version_missing_from_its_history_is_named(tmp_path: Path) -> None:
    """mend18d: the history is read by one cursor alongside the current versions (no read per
    key): keys before and after the damaged one, with and without history, stay clean."""
    from storage.keyspace import span, version_prefix

    cfg = sim_config(tmp_path, 0)
    nodes = SimNodes(list(cfg.nodes))
    async with sim_cluster_s3(tmp_path, cfg, nodes, "plain") as (cluster, s3):
        await asyncio.to_thread(s3.put_object, Bucket="plain", Key="p", Body=b"p")
        await asyncio.to_thread(s3.create_bucket, Bucket="ver")
        await asyncio.to_thread(s3.put_bucket_versioning, Bucket="ver",
                                VersioningConfiguration={"Status": "Enabled"})
        for key in ("a", "b", "c", "b"):
            await asyncio.to_thread(s3.put_object, Bucket="ver", Key=key, Body=b"x")
        assert (await fsck(cluster.meta, nodes, cfg.nodes)).status() == 0
        cur = await cluster.meta.get(object_key("ver", "b"))
        vid = ObjectVersion.decode(cur.value).version_id  # type: ignore[union-attr]
        for it in await cluster.meta.range(*span(version_prefix("ver", "b")), limit=10):
            if ObjectVersion.decode(it.value).version_id == vid:
                await cluster.meta.delete(it.key)
        got = await fsck(cluster.meta, nodes, cfg.nodes)
        assert dict(got.totals) == {"version-not-listed": 1}, got.as_json()
        assert got.findings["version-not-listed"] == [f"ver/b current version {vid}"]


async def test_a_pending_retirement_is_not_a_dangling_index(tmp_path: Path) -> None:
    """Review19h low 4: a removed version whose `X` entries a pending retirement marker
    deletes in its steps was reported as `dangling-index` (an error) until the steps ran."""
    from storage import retiring
    from storage.metadata import Txn
    from storage.object_edits import version_records

    cfg = sim_config(tmp_path, 0)
    nodes = SimNodes(list(cfg.nodes))
    async with sim_cluster_s3(tmp_path, cfg, nodes, "bkt") as (cluster, s3):
        await asyncio.to_thread(s3.put_object, Bucket="bkt", Key="d", Body=BODY)
        records = await version_records(cluster.meta, "bkt", "d", None)
        v = records[0][1]
        marker, value = retiring.version_marker(v, 0)  # as a removal cut short leaves it
        assert await cluster.meta.txn(Txn(puts={marker: value},
                                          deletes=tuple(it.key for it, _ in records)))
        got = await fsck(cluster.meta, nodes, cfg.nodes)
        assert got.errors == 0, got.as_json()
        assert got.findings["retirement-pending"] == [
            f"stripe {v.parts[0].stripe_id.hex()}: its version is removed, its index entry "
            "goes with the marker's steps"]
