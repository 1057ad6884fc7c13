"""review17b: `discard_parts` on a full metadata store deletes shards directly. It runs after
any failed commit, including one whose outcome was unknown (applied, then raised: a timeout
or a cancellation once the transaction was sent): the stripes of a version the store names
must not lose their shards (the GC queue's path checks the stripe's index entry first)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from storage.errors import StorageFull
from storage.keyspace import object_key
from storage.records import ObjectVersion
from storage.testing.simnodes import SimNodes
from tests.inproc import served_s3, sim_config, wired_cluster


async def test_a_full_store_discard_never_deletes_a_committed_versions_shards(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = sim_config(tmp_path, 0)  # every object in shards
    nodes = SimNodes(list(cfg.nodes))
    async with wired_cluster(tmp_path, cfg, nodes) as cluster:
        cred = await cluster.tenants.create_key("t")
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            await asyncio.to_thread(s3.create_bucket, Bucket="bkt")
            await asyncio.to_thread(s3.put_object, Bucket="bkt", Key="k", Body=b"x" * 70000)
            item = await cluster.meta.get(object_key("bkt", "k"))
            assert item is not None
            v = ObjectVersion.decode(item.value)

            async def full(*_: Any, **__: Any) -> Any:
                raise StorageFull("metadata disk full")

            # the commit of `v` applied, but its caller saw an error; the store is full now
            monkeypatch.setattr(cluster.meta, "txn", full)
            with pytest.raises(StorageFull):
                await cluster.objects.discard_parts(v.parts)
            monkeypatch.undo()
            got = await asyncio.to_thread(s3.get_object, Bucket="bkt", Key="k")
            assert await asyncio.to_thread(got["Body"].read) == b"x" * 70000
