"""Garbage collection: delete the shards of retired or aborted stripes once they are due.

Entries wait a grace period so reads that started on an old version can finish. A stripe
whose shards could not all be deleted (a node down) stays queued and is retried.

An entry never deletes a copy its stripe's live manifest names. Repair queues the copies of
a commit it gave up, and the copies a commit replaced; placement is deterministic per
stripe, so a later commit may name the very same (index, node) again. The rule, per entry:

1. read the stripe's manifest (`load_manifest`: one read for a stripe with no live index
   entry, a retired one; three for a live one) and skip every (index, node) it names;
2. delete the rest;
3. for a live stripe, read the manifest again: a commit that landed between 1 and 3 and
   names a copy deleted in 2 queues the stripe for urgent repair, so that shard is rebuilt
   at once instead of waiting for a sweep. A commit always follows its own shard writes,
   so only a commit inside that window can name a copy this step deleted.

On etcd (where every idle poll is a Raft read) a watch on the queue wakes the worker when
an entry is queued, and otherwise it sleeps until its earliest entry falls due (at most
`WATCHED_MAX_S`), instead of reading the queue every second; a stream of new entries
wakes it at most once per `min_pause_s`, as often as it used to poll.
"""

from __future__ import annotations

import time

from storage.keyspace import GC, gc_key, space, stripe_of, urgent_repair_key
from storage.keyspace import unpack as unpack_key
from storage.metadata import MetadataStore, Txn
from storage.records import pack, unpack
from storage.stripes import StripeStore
from storage.workers import WorkerState
from storage.workers.manifests import Manifest, load_manifest

BATCH = 64
STALE_INTENT_S = 3600.0
WATCHED_MAX_S = 30.0  # the longest sleep of a watched, idle collector (a bound on a missed wake)


class GarbageCollector:
    name = "gc"
    idle_s = 1.0  # the runner's pause after an idle step (and, watched, between two wakes)
    min_pause_s = 1.0
    wake_prefix = space(GC)[0]  # on etcd, a queued entry wakes it (storage/workers/wakes)

    def __init__(self, meta: MetadataStore, stripes: StripeStore,
                 stale_intent_s: float = STALE_INTENT_S) -> None:
        self._meta = meta
        self._stripes = stripes
        self._stale_intent_s = stale_intent_s
        self.deleted = 0
        self.kept = 0  # copies an entry named that a live manifest names (not deleted)
        self.requeued = 0  # stripes queued for repair: a commit named a copy as it went
        self._next_due_ns: int | None = None  # the earliest entry not yet due (None: none)

    @property
    def watched_idle_s(self) -> float:
        """The idle pause when queued entries wake it: until the next one falls due."""
        if self._next_due_ns is None:
            return WATCHED_MAX_S
        return min(WATCHED_MAX_S, max(0.0, (self._next_due_ns - time.time_ns()) / 1e9))

    async def step(self) -> WorkerState:
        now = time.time_ns()
        queued = await self._meta.range(*space(GC), limit=BATCH)  # earliest due first
        items = [i for i in queued if int(unpack_key(i.key)[1]) <= now]
        self._next_due_ns = (int(unpack_key(queued[len(items)].key)[1])
                             if len(items) < len(queued) else None)
        for item in items:
            stripe_id = stripe_of(item.key)
            nodes, live = await self._unnamed(stripe_id, list(unpack(item.value)["nodes"]))
            failed = await self._stripes.delete(stripe_id, nodes) if any(nodes) else []
            if live and any(nodes):
                await self._recheck(stripe_id, nodes)
            if failed:
                left = [n if n in failed else None for n in nodes]
                retry = gc_key(time.time_ns() + 30 * 10**9, stripe_id)
                await self._meta.txn(Txn(puts={retry: pack({"nodes": left})},
                                         deletes=(item.key,)))
            else:
                await self._meta.delete(item.key)
                self.deleted += 1
        return WorkerState.BUSY if items and len(queued) == BATCH else WorkerState.IDLE

    async def _unnamed(self, stripe_id: bytes,
                       nodes: list[str | None]) -> tuple[list[str | None], bool]:
        """`nodes` (index -> node) without the copies the stripe's live manifest names, and
        whether the stripe has a live manifest (module docstring, step 1)."""
        man = await load_manifest(self._meta, stripe_id)
        if not isinstance(man, Manifest):
            return nodes, False
        out = _unnamed_by(man.part.nodes, nodes)
        self.kept += sum(1 for a, b in zip(nodes, out, strict=True) if a and not b)
        return out, True

    async def _recheck(self, stripe_id: bytes, deleted: list[str | None]) -> None:
        """A commit named a copy just deleted (module docstring, step 3): repair it now."""
        man = await load_manifest(self._meta, stripe_id)
        if not isinstance(man, Manifest) or _unnamed_by(man.part.nodes, deleted) == deleted:
            return
        key = urgent_repair_key(stripe_id)
        await self._meta.txn(Txn(compares={key: 0}, puts={key: pack(
            {"reason": "gc deleted a copy a commit named meanwhile", "queued": time.time()})}))
        self.requeued += 1


def _unnamed_by(named: list[str | None], nodes: list[str | None]) -> list[str | None]:
    """`nodes` (index -> node) with every copy `named` (a manifest's nodes) names set None."""
    return [n if n and not (i < len(named) and named[i] == n) else None
            for i, n in enumerate(nodes)]
