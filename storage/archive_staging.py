"""A many-part archive copy's index entries staged ahead of its swap, and their undoing.

A transition or restore completion of more than `retiring.INLINE_PARTS` parts indexes its
new copy's stripes (`X`) in steps before the one small transaction that swaps the copy in
(`ArchiveService._swap_in`): etcd refuses a transaction of more than `--max-txn-ops`.

A marker `(SG, token)` naming the copy's stripes is written before the first step, and each
staged entry names the marker. The swap compares the marker unchanged and deletes it, so a
marker that exists means a swap that has not applied:

- a staged entry its version does not name yet resolves "staging" while its marker exists
  (`load_manifest`): repair defers the repair-queue entry a degraded stripe's step wrote
  (it dropped it as "gone", and the stripe stayed degraded after the swap), the orphan
  sweep keeps its shards, fsck warns `archive-staging` instead of `dangling-index`;
- undoing it (`abandon`, then `clean`): the marker is rewritten abandoned (a swap comparing
  it cannot apply any more), then in steps each stripe's entry and repair-queue entries are
  deleted and its discard tombstone and GC entry put in one transaction (a staging step
  still in flight compares the tombstone absent and fails), and the marker is deleted last.
  Every step can be repeated, so a cleanup cut short (a kill) is finished later;
- the reclaim worker (`Sweep`) cleans an abandoned marker at once. A marker written in a
  leased worker's step (lifecycle, restore: storage/workers/stepfence.py) names that step's
  lease and fence (the key and revision its commits compare): once the fence moved or the
  lease has no live holder, the step's holder died or lost the lease and the store refuses
  its swap, so the marker is abandoned at once, however often processes restart. Any marker
  (the only rule for one without a fence: `tessera lifecycle run-once`; for a fenced one, a
  live holder whose own undo failed) is abandoned once the sweep has seen it, unchanged, for
  the orphan grace on its own monotonic clock: by then the write is older than any write may
  commit (`WriteAge`, on the boot clock), so nobody stages or swaps it any more. Abandoning early is never unsafe, only wasted work: the abandon fences the swap
  whenever it happens.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from storage.errors import Conflict
from storage.keyspace import (
    discarded_key,
    repair_key,
    staging_key,
    stripe_index_key,
    urgent_repair_key,
)
from storage.leases import Leases
from storage.metadata import Item, MetadataStore, Txn
from storage.metadata.fence import FENCE
from storage.records import PartLayout, pack, unpack
from storage.retiring import STEP_PARTS, discard_puts

CLEAN_STRIPES = 20  # stripes per cleaning step: 5 ops each (3 deletes, 2 puts), under 128


async def begin(meta: MetadataStore, parts: list[PartLayout]) -> Item:
    """Write the marker of a copy about to be staged; returns it (with its revision)."""
    key = staging_key(secrets.token_hex(8))
    m: dict[str, Any] = {"stripes": [[p.stripe_id, list(p.nodes)] for p in parts if p.stripe_id],
                         "started": time.time()}  # (for people: no decision reads it)
    fence = FENCE.get()
    if fence is not None and fence.active and fence.key:  # in a leased worker's step
        m["lease"], m["fence"] = fence.lease.name, [fence.key, fence.revision]
    value = pack(m)
    if not await meta.txn(Txn(compares={key: 0}, puts={key: value})):
        raise Conflict("a staging marker's fresh key exists")
    item = await meta.get(key)
    if item is None:
        raise Conflict("a staging marker vanished")
    return item


STEP_ATTEMPTS = 8  # a staging step retried after the membership epoch moved (removals)


async def stage(meta: MetadataStore, marker: Item, parts: list[PartLayout],
                index: Callable[[dict[bytes, bytes], PartLayout, dict[bytes, int]], None],
                refused: Callable[[dict[bytes, int]], Awaitable[None]]) -> None:
    """Index `parts` under `marker`, `STEP_PARTS` a transaction, each comparing the marker
    unchanged (`index` adds a part's entry and its compares: the stripe's tombstone, the
    membership epoch); a refused step is given to `refused` (NodeRemoved for a node removed
    meanwhile: `ObjectService.recheck_nodes`) and tried again unless the marker changed or a
    stripe was discarded (Conflict): another node's removal moves the epoch too."""
    for at in range(0, len(parts), STEP_PARTS):
        step = parts[at:at + STEP_PARTS]
        for attempt in range(STEP_ATTEMPTS):
            puts: dict[bytes, bytes] = {}
            compares = {marker.key: marker.revision}
            for p in step:
                index(puts, p, compares)
            if await meta.txn(Txn(compares=compares, puts=puts)):
                break
            await refused(compares)
            # the membership epoch moved (a removal elsewhere; the map is re-read now): the
            # step again, unless the staging was abandoned or a stripe of it discarded
            discarded = [p for p in step if await meta.get(discarded_key(p.stripe_id))]
            if discarded or attempt == STEP_ATTEMPTS - 1 or not await live(meta, marker):
                raise Conflict("a staged copy was abandoned, or a stripe of it discarded")


async def live(meta: MetadataStore, marker: Item) -> bool:
    """Whether `marker` is still as staged (a swap comparing it may still apply)."""
    item = await meta.get(marker.key)
    return item is not None and item.revision == marker.revision


async def abandon(meta: MetadataStore, key: bytes) -> Item | None:
    """Mark the staging `key` abandoned, so no swap comparing it applies; the marker as
    abandoned, or None once it is gone (its swap applied, or its cleanup finished)."""
    while (item := await meta.get(key)) is not None:
        m = unpack(item.value)
        if m.get("abandoned"):
            return item
        m["abandoned"] = True
        if await meta.txn(Txn(compares={key: item.revision}, puts={key: pack(m)})):
            return await meta.get(key)
    return None


async def clean(meta: MetadataStore, marker: Item, orphan_grace_s: float) -> None:
    """Undo an abandoned staging: every stripe's entry and repair-queue entries deleted, its
    tombstone and GC entry put (`discard_puts`), in steps comparing the marker; then the
    marker. A step that finds the marker gone stops: another cleaner finished."""
    m = unpack(marker.value)
    assert m.get("abandoned"), "only an abandoned staging is cleaned"
    now = time.time_ns()
    until = now + int(orphan_grace_s * 1e9)
    stripes = m["stripes"]
    for at in range(0, len(stripes), CLEAN_STRIPES):
        puts: dict[bytes, bytes] = {}
        deletes: list[bytes] = []
        for sid, nodes in stripes[at:at + CLEAN_STRIPES]:
            sid = bytes(sid)
            deletes += [stripe_index_key(sid), repair_key(sid), urgent_repair_key(sid)]
            puts.update(discard_puts(sid, nodes, now, until))
        if not await meta.txn(Txn(compares={marker.key: marker.revision}, puts=puts,
                                  deletes=tuple(deletes))):
            return
    await meta.txn(Txn(compares={marker.key: marker.revision}, deletes=(marker.key,)))


async def undo(meta: MetadataStore, key: bytes, orphan_grace_s: float) -> None:
    """Abandon and clean the staging `key`, unless its swap applied (the marker is gone)."""
    marker = await abandon(meta, key)
    if marker is not None:
        await clean(meta, marker, orphan_grace_s)


class Sweep:
    """The reclaim worker's part: finish the stagings nobody will finish (module docstring)."""

    def __init__(self, meta: MetadataStore, orphan_grace_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._meta = meta
        self._leases = Leases(meta)
        self._grace_s = orphan_grace_s
        self._clock = clock
        self._seen: dict[bytes, tuple[int, float]] = {}  # marker -> (revision, first seen)

    async def finish(self, item: Item) -> bool:
        """Clean the staging `item` if it is abandoned, its step's lease fence moved on, or
        (without a fence) it has been seen unchanged for the orphan grace; False when it is
        left (still possibly live)."""
        m: dict[str, Any] = unpack(item.value)
        if not m.get("abandoned") and not await self._holder_gone(m):
            now = self._clock()
            seen = self._seen.get(item.key)
            if seen is None or seen[0] != item.revision:
                seen = self._seen[item.key] = (item.revision, now)
            if now - seen[1] < self._grace_s:
                return False
        await undo(self._meta, item.key, self._grace_s)
        self._seen.pop(item.key, None)
        return True

    async def _holder_gone(self, m: dict[str, Any]) -> bool:
        """Whether the step that wrote marker `m` can no longer commit: its lease's fence key
        is gone or at another revision (ended, or taken since), or the lease has no live
        holder (a dead holder's SQLite record expired). False for a marker without a fence."""
        fence = m.get("fence")
        if not fence:
            return False
        key, revision = bytes(fence[0]), int(fence[1])
        now = await self._meta.get(key)
        if now is None or now.revision != revision:
            return True
        return await self._leases.holder(str(m.get("lease", ""))) is None

    def keep(self, keys: set[bytes]) -> None:
        """Forget the markers not among `keys` (finished elsewhere): the map stays bounded."""
        self._seen = {k: v for k, v in self._seen.items() if k in keys}
