"""Garbage collection: delete the shards of retired or aborted stripes once they are due.

Entries wait a grace period so reads that started on an old version can finish. A stripe
whose shards could not all be deleted (a node down) stays queued and is retried.
"""

from __future__ import annotations

import time

from storage.keyspace import GC, due_before, gc_key, stripe_of
from storage.metadata import MetadataStore, Txn
from storage.records import pack, unpack
from storage.stripes import StripeStore
from storage.workers import WorkerState

BATCH = 64
STALE_INTENT_S = 3600.0


class GarbageCollector:
    name = "gc"

    def __init__(self, meta: MetadataStore, stripes: StripeStore,
                 stale_intent_s: float = STALE_INTENT_S) -> None:
        self._meta = meta
        self._stripes = stripes
        self._stale_intent_s = stale_intent_s
        self.deleted = 0

    async def step(self) -> WorkerState:
        items = await self._meta.range(*due_before(GC, time.time_ns()), limit=BATCH)
        for item in items:
            stripe_id = stripe_of(item.key)
            nodes = unpack(item.value)["nodes"]
            failed = await self._stripes.delete(stripe_id, nodes)
            if failed:
                left = [n if n in failed else None for n in nodes]
                retry = gc_key(time.time_ns() + 30 * 10**9, stripe_id)
                await self._meta.txn(Txn(puts={retry: pack({"nodes": left})},
                                         deletes=(item.key,)))
            else:
                await self._meta.delete(item.key)
                self.deleted += 1
        return WorkerState.BUSY if len(items) == BATCH else WorkerState.IDLE
