"""Concurrent reads on the real 3-member etcd share requests (storage/metadata/etcd_reads.py):
every caller gets exactly the records it asked for, absent ones as absent, and the
concurrent reads cost one request; a read issued after a write returns sees
it (each read is linearizable: its request is sent after it was asked)."""

from __future__ import annotations

import asyncio
import secrets

from storage.metadata import Txn
from storage.metadata.etcd import EtcdStore
from tests.contract.test_metadata_etcd import pytestmark  # noqa: F401


async def test_concurrent_reads_share_requests_and_get_their_own_answers(etcd: EtcdStore
                                                                         ) -> None:
    ns = b"reads-" + secrets.token_hex(4).encode() + b"/"
    keys = [ns + b"%02d" % i for i in range(20)]
    revs = {k: await etcd.put(k, b"v" + k) for k in keys}
    try:
        before = etcd.round_trips
        gets = [etcd.get(k) for k in keys] + [etcd.get(ns + b"absent")]
        both = [etcd.get_and_range((k, ns + b"absent"), k, k + b"\xff", 4) for k in keys]
        got = await asyncio.gather(*gets, *both)
        sent = etcd.round_trips - before
        # 41 reads, 81 ranges (within MAX_OPS), all asked before the first request went out
        assert sent == 1
        for k, item in zip(keys, got[:20], strict=True):
            assert item is not None and (item.key, item.value, item.revision) == (
                k, b"v" + k, revs[k])
        assert got[20] is None
        for k, (items, rest) in zip(keys, got[21:], strict=True):
            first, absent = items
            assert first is not None and first.revision == revs[k] and absent is None
            assert [i.key for i in rest] == [k]
        # a write that returned is seen by every read asked after it, batched or not
        rev = await etcd.put(keys[0], b"new")
        seen = await asyncio.gather(*(etcd.get(keys[0]) for _ in range(10)))
        assert all(i is not None and (i.value, i.revision) == (b"new", rev) for i in seen)
    finally:
        await etcd.txn(Txn(deletes=tuple(keys)))
