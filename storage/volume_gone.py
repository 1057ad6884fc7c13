"""Retiring a volume's pointers in bounded, crash-safe steps: a deleted volume's (`VD`
record, from `VolumeService.delete`) and a shredded tenant's (the reclaim worker).

Each step is one transaction: a batch of journal segments, kept segments or extent pointers
deleted, each stripe they name queued for collection after the grace with its index entry
removed. A deleted volume's last step unlinks it from its origins and drops its `VD` record,
so a delete killed anywhere in between is finished by whoever runs the next step (the
reclaim worker after a restart): no pointer, stripe or origin link outlives it.
"""

from __future__ import annotations

import time

from storage.keyspace import (
    extent_prefix,
    gc_key,
    journal_prefix,
    kept_journal_prefix,
    span,
    stripe_index_key,
)
from storage.metadata import Item, MetadataStore, Txn
from storage.records import pack, unpack
from storage.volume_records import Volume, unlink_clone

BATCH = 200


async def retire(meta: MetadataStore, items: list[Item], grace_s: float) -> bool:
    """Delete extent pointers or journal segment records in one transaction, each stripe
    they name queued for collection after `grace_s` with its index entry removed (the one
    copy of this rule: snapshot deletes, volume deletes and tenant reclaims use it). Each
    record's revision is compared: False, and nothing done, when one changed meanwhile."""
    due = time.time_ns() + int(grace_s * 1e9)
    puts: dict[bytes, bytes] = {}
    deletes: list[bytes] = []
    for it in items:
        deletes.append(it.key)
        p = unpack(it.value)
        if not p.get("trim") and p.get("stripe"):
            stripe = bytes(p["stripe"])
            if any(p.get("nodes") or []):
                puts[gc_key(due, stripe)] = pack({"nodes": list(p["nodes"])})
            deletes.append(stripe_index_key(stripe))
    return await meta.txn(Txn(compares={it.key: it.revision for it in items}, puts=puts,
                              deletes=tuple(deletes)))


async def retire_pointers_step(meta: MetadataStore, vid: str, grace_s: float) -> bool:
    """Retire one batch of volume `vid`'s journal segments, then extent pointers; False when
    none is left."""
    for prefix in (journal_prefix(vid), kept_journal_prefix(vid), extent_prefix(vid)):
        pointers = await meta.range(*span(prefix), limit=BATCH)
        if pointers:
            await retire(meta, pointers, grace_s)
            return True
    return False


async def gone_volume_step(meta: MetadataStore, item: Item, grace_s: float) -> None:
    """One step of finishing the delete of the volume `item` (its `VD` record) holds."""
    vol = Volume.decode(item.value)
    if await retire_pointers_step(meta, vol.id, grace_s):
        return
    for base in vol.origins():
        await unlink_clone(meta, vol, base)
    await meta.txn(Txn(compares={item.key: item.revision}, deletes=(item.key,)))
