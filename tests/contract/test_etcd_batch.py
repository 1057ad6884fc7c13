"""Concurrent transactions nested in one etcd Txn, on a real 3-member cluster: each caller
gets what its own Txn would have done, and conflicting ones never share a request."""

from __future__ import annotations

import asyncio
import os
import secrets

import pytest

from storage.metadata import Txn
from storage.metadata.etcd import EtcdStore

pytestmark = pytest.mark.skipif(not os.environ.get("TESSERA_ETCD_ENDPOINTS"),
                                reason="no etcd cluster (etcd not installed)")


@pytest.fixture
def ns() -> bytes:
    return b"eb/" + secrets.token_hex(6).encode() + b"/"


async def test_concurrent_commits_share_requests_each_with_its_own_outcome(
        etcd: EtcdStore, ns: bytes) -> None:
    taken = [ns + b"taken/%d" % i for i in range(10)]
    for k in taken:
        await etcd.put(k, b"old")
    revs = {k: (await etcd.get(k)).revision for k in taken}  # type: ignore[union-attr]
    fresh = [ns + b"new/%d" % i for i in range(30)]
    sent = etcd.round_trips

    async def commit(key: bytes) -> tuple[bool, dict]:
        body = ns + b"body/" + key.rsplit(b"/", 2)[-2] + key.rsplit(b"/", 1)[-1]
        return await etcd.txn_or_read(
            Txn(compares={key: 0}, puts={key: b"new:" + key, body: b"b" * 4096}), (key,))

    outcomes = await asyncio.gather(*(commit(k) for k in fresh + taken))
    assert etcd._batcher.batches > 0 and etcd.round_trips - sent < len(outcomes)
    for k, (done, seen) in zip(fresh + taken, outcomes, strict=True):
        if k in revs:  # compare failed: the record as it is, nothing written
            assert not done and seen[k] is not None and seen[k].value == b"old"
            assert seen[k].revision == revs[k]
            assert (await etcd.get(k)).value == b"old"  # type: ignore[union-attr]
        else:
            assert done and seen == {}
            assert (await etcd.get(k)).value == b"new:" + k  # type: ignore[union-attr]


async def test_conflicting_compare_and_swaps_all_count(etcd: EtcdStore, ns: bytes) -> None:
    """20 concurrent increments of one counter, each a compare-and-swap retried on the
    record its failure returns: all 20 land, none lost to a shared request."""
    key = ns + b"counter"
    await etcd.put(key, b"0")
    start = await etcd.get(key)
    assert start is not None

    async def increment(item: object) -> None:
        cur = start
        while True:
            assert cur is not None
            done, seen = await etcd.txn_or_read(
                Txn(compares={key: cur.revision}, puts={key: b"%d" % (int(cur.value) + 1)}),
                (key,))
            if done:
                return
            cur = seen[key]

    await asyncio.gather(*(increment(i) for i in range(20)))
    final = await etcd.get(key)
    assert final is not None and final.value == b"20"
