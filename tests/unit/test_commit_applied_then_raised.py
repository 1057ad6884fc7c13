"""atkcrash18: a commit whose outcome the gateway never learnt (the transaction applied, then
its caller saw an error: an etcd timeout or a broken connection after sending, a cancellation
while SQLite's commit thread finished) must not cost the version it made its shards.

`ObjectService.put` (and the part, copy and archive writers) discard an uncommitted write's
stripes after any failed commit. The discard used to delete the stripe's index entry and
queue its shards for collection now, in one transaction, whether or not the commit had
applied: the collector then found no index entry and deleted every shard of a version the
listing shows (GetObject: 503, "too few storage nodes", for good). The real S3 front, the
real object service, metadata store and collector over simulated nodes; only the store's
answer to the one commit is replaced by an error after it applied."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from storage.keyspace import discarded_key, object_key, stripe_index_key
from storage.metadata import Txn
from storage.records import ObjectVersion
from storage.testing.simnodes import SimNodes
from storage.workers.gc import GarbageCollector
from tests.inproc import sim_cluster_s3, sim_config

BODY = b"y" * 70000  # erasure-coded (inline is off), one small stripe


async def test_a_commit_that_applied_then_raised_keeps_its_versions_shards(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = sim_config(tmp_path, 0)
    nodes = SimNodes(list(cfg.nodes))
    async with sim_cluster_s3(tmp_path, cfg, nodes, "bkt") as (cluster, s3):
        okey = object_key("bkt", "k")
        real = cluster.meta.txn_or_read

        async def applied_then_timed_out(txn: Txn, reads: tuple[bytes, ...]) -> Any:
            out = await real(txn, reads)
            if okey in txn.puts and out[0]:
                raise TimeoutError("the commit applied; its answer was lost")
            return out

        monkeypatch.setattr(cluster.meta, "txn_or_read", applied_then_timed_out)
        with pytest.raises(ClientError):
            await asyncio.to_thread(s3.put_object, Bucket="bkt", Key="k", Body=BODY)
        monkeypatch.undo()
        item = await cluster.meta.get(okey)
        assert item is not None  # the version is there: the commit did apply
        v = ObjectVersion.decode(item.value)
        assert await cluster.meta.get(stripe_index_key(v.parts[0].stripe_id)) is not None
        # the discard found the stripe indexed (its commit applied): no tombstone, and
        # nothing the collector runs now deletes a copy of it
        assert await cluster.meta.get(discarded_key(v.parts[0].stripe_id)) is None
        gc = GarbageCollector(cluster.meta, cluster.stripes)
        await gc.step()
        assert gc.deleted == 0
        got = await asyncio.to_thread(s3.get_object, Bucket="bkt", Key="k")
        assert await asyncio.to_thread(got["Body"].read) == BODY
