"""review19j: `discard_parts` of a many-part copy fits etcd's `--max-txn-ops` (default 128).

An archive transition or restore completion of more than 40 parts (mend19h) discards its
whole new copy when the swap is declined or raises; `discard_parts` put every stripe's
compare + tombstone + GC entry in one transaction (3 ops a stripe), which etcd refuses whole
past ~42 stripes (128) or ~341 (Tessera's 1024): the copy was left to the orphan sweep."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from storage.keyspace import discarded_key, stripe_index_key
from storage.metadata import Txn
from storage.metadata.etcd import EtcdError
from storage.records import PartLayout
from storage.testing.simnodes import SimNodes
from tests.inproc import sim_config, wired_cluster

MAX_TXN_OPS = 128  # etcd's default


async def test_discarding_a_many_part_copy_stays_under_etcds_txn_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = sim_config(tmp_path, 0)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes))) as cluster:
        real = cluster.meta.txn

        async def limited(t: Txn, *a: Any, **kw: Any) -> Any:
            ops = len(t.compares) + len(t.puts) + len(t.deletes)
            if ops > MAX_TXN_OPS:
                raise EtcdError("etcdserver: too many operations in txn request")
            return await real(t, *a, **kw)

        monkeypatch.setattr(cluster.meta, "txn", limited)
        parts = [PartLayout(number=n, size=1, etag="", stripe_id=os.urandom(16), k=4, m=2,
                            segment_size=1 << 20, nodes=[None] * 6) for n in range(1, 101)]
        indexed = parts[7]  # a stripe a commit named although it raised: spared
        await real(Txn(puts={stripe_index_key(indexed.stripe_id): b"x"}))
        await cluster.objects.discard_parts(parts)
        for p in parts:
            tomb = await cluster.meta.get(discarded_key(p.stripe_id))
            assert (tomb is None) == (p is indexed), p.number
