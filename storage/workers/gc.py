"""Garbage collection: delete the shards of retired or aborted stripes once they are due.

Entries wait a grace period so reads that started on an old version can finish. A stripe
whose shards could not all be deleted (a node down) stays queued and is retried.

An entry never deletes a copy a live manifest names, now or later. Repair queues the copies
of a commit it gave up, and the copies a commit replaced; placement is deterministic per
stripe, so a later commit may name the very same (index, node) again. Per entry:

1. read the stripe's X entry; with none, delete the copies (no commit can name a copy of
   a stripe with no index entry) and the stripe's fence with the entry; a discarded
   write's entry (`discarded`: `ObjectService.discard_parts`) is requeued, with no copies,
   until its tombstone (`XD`) may go, and then drops it;
2. else read its manifest (a live one) and leave out every (index, node) it names;
3. claim the rest on the stripe's fence, comparing the X entry and the manifest records
   read in 2 (a change: back to 1), delete them, and drop the claim's pending mark in the
   transaction that retires the entry (`storage/workers/gcfence.py`: a commit whose
   shard write could have met this delete is refused, so none can name a deleted copy).
   A copy whose delete failed may still be being deleted (a request that timed out): the
   retry entry queued in that transaction takes over its pending mark.
An entry whose claim loses CLAIM_TRIES times (a record rewritten all the time: the single
version record of a big multipart object that every repair commit rewrites) is requeued
`RETRY_S` later, as a failed delete is, with any pending mark its owner holds: it stayed
due at the queue's head, and a batch of them stopped every entry behind it.

On etcd (where every idle poll is a Raft read) a watch on the queue wakes the worker when
an entry is queued, and otherwise it sleeps until its earliest entry falls due (at most
`WATCHED_MAX_S`), instead of reading the queue every second; a stream of new entries
wakes it at most once per `min_pause_s`, as often as it used to poll.

Idle, it also deletes the fences of live stripes left with nothing pending once their last
claim is old (`gcfence.reclaim`, a page per step, a pass every `RECLAIM_EVERY_S`).
"""

from __future__ import annotations

import time

from storage.keyspace import (
    GC,
    GC_FENCE,
    discarded_key,
    gc_key,
    space,
    stripe_index_key,
    stripe_of,
)
from storage.keyspace import unpack as unpack_key
from storage.metadata import Item, MetadataStore, Txn
from storage.records import pack, unpack
from storage.stripes import StripeStore
from storage.workers import WorkerState
from storage.workers.gcfence import claim, copy_name, read_fence, reclaim, settle
from storage.workers.manifests import Manifest, load_manifest

BATCH = 64
CLAIM_TRIES = 8  # claims of one entry per step while its stripe's records keep changing
RETRY_S = 30.0  # an entry whose delete failed or whose claim kept losing runs again this late
STALE_INTENT_S = 3600.0
RECLAIM_EVERY_S = 60.0  # an idle collector's pause between two passes over the fences
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
        self._next_due_ns: int | None = None  # the earliest entry not yet due (None: none)
        self._fence_cursor = space(GC_FENCE)[0]
        self._next_reclaim = 0.0
        self.fences_reclaimed = 0
        self.deferred = 0  # entries requeued because their claim kept losing

    @property
    def watched_idle_s(self) -> float:
        """The idle pause when queued entries wake it: until the next one falls due (none
        while a pass over the fences is under way)."""
        if self._fence_cursor != space(GC_FENCE)[0]:
            return 0.0
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
            await self._collect(item)
        if not items and time.monotonic() >= self._next_reclaim:  # idle: a page of fences
            self._fence_cursor, n = await reclaim(self._meta, self._fence_cursor)
            self.fences_reclaimed += n
            wrapped = self._fence_cursor == space(GC_FENCE)[0]  # a pass ended: pause
            self._next_reclaim = time.monotonic() + (RECLAIM_EVERY_S if wrapped else 0.0)
        return WorkerState.BUSY if items and len(queued) == BATCH else WorkerState.IDLE

    async def _collect(self, item: Item) -> None:
        """One due entry (module docstring): claim, delete, settle."""
        stripe_id = stripe_of(item.key)
        owner = item.key.hex()
        entry = unpack(item.value)
        nodes = list(entry["nodes"])
        until = entry.get("discarded")  # a discarded write's: its tombstone goes at `until`
        for _ in range(CLAIM_TRIES):
            x = await self._meta.get(stripe_index_key(stripe_id))
            if x is None:
                break
            unnamed, compares = await self._unnamed(stripe_id, nodes, x)
            if not any(unnamed) or await claim(self._meta, stripe_id, owner, unnamed, compares):
                nodes = unnamed
                break
        else:
            await self._defer(item, stripe_id, owner)
            return
        failed = await self._stripes.delete(stripe_id, nodes) if any(nodes) else []
        done = Txn(deletes=(item.key,))
        kept = {} if until is None else {"discarded": until}
        carry = None
        if failed:  # maybe still deleting (a timed-out request): the retry keeps them claimed
            left = [n if n in failed else None for n in nodes]
            retry = gc_key(time.time_ns() + int(RETRY_S * 1e9), stripe_id)
            done = Txn(puts={retry: pack({"nodes": left, **kept})}, deletes=(item.key,))
            carry = (retry.hex(), [copy_name(i, n) for i, n in enumerate(left) if n])
        elif until is not None and time.time_ns() < until:  # its tombstone waits: requeued
            done = Txn(puts={gc_key(until, stripe_id): pack({"nodes": [None] * len(nodes),
                                                             **kept})},
                       deletes=(item.key,))
        elif until is not None:  # no late commit can apply any more (`discard_parts`)
            done = Txn(deletes=(item.key, discarded_key(stripe_id)))
        await settle(self._meta, stripe_id, owner, done, indexed=x is not None, carry=carry)
        if not failed:
            self.deleted += 1

    async def _defer(self, item: Item, stripe_id: bytes, owner: str) -> None:
        """Requeue an entry whose claim kept losing `RETRY_S` later, its owner's pending mark
        (left by a run that claimed and died) carried to the new entry."""
        retry = gc_key(time.time_ns() + int(RETRY_S * 1e9), stripe_id)
        mine = (await read_fence(self._meta, stripe_id)).pending.get(owner)
        done = Txn(compares={item.key: item.revision}, puts={retry: item.value},
                   deletes=(item.key,))  # two collectors (a lease handover) requeue it once
        if await settle(self._meta, stripe_id, owner, done, indexed=True,
                        carry=(retry.hex(), mine) if mine else None):
            self.deferred += 1

    async def _unnamed(self, stripe_id: bytes, nodes: list[str | None], x: Item,
                       ) -> tuple[list[str | None], dict[bytes, int]]:
        """`nodes` (index -> node) without the copies the stripe's live manifest names, and
        the records a claim compares (the X entry, the manifest's records)."""
        compares = {x.key: x.revision}
        man = await load_manifest(self._meta, stripe_id)
        if not isinstance(man, Manifest):
            return nodes, compares
        out = _unnamed_by(man.part.nodes, nodes)
        self.kept += sum(1 for a, b in zip(nodes, out, strict=True) if a and not b)
        compares.update({it.key: it.revision for it in man.items})
        return out, compares


def _unnamed_by(named: list[str | None], nodes: list[str | None]) -> list[str | None]:
    """`nodes` (index -> node) with every copy `named` (a manifest's nodes) names set None."""
    return [n if n and not (i < len(named) and named[i] == n) else None
            for i, n in enumerate(nodes)]
