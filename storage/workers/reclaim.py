"""Reclaiming a shredded tenant: its records, shards, queue entries and names.

Once a tenant's keys are destroyed (`tessera tenant shred`, after its waiting period) nothing
of it can be read again, and nothing of it can be changed through S3 either. The `reclaim`
worker then removes what is left, one bounded batch per step, each batch one transaction (a
crash resumes where it stopped, and a batch that raced another writer is redone):

1. each bucket's configuration is cleared first (lifecycle rules, logging, notifications: no
   worker touches the bucket again), then its uploads in progress with their parts, then every
   version record (`O`, `V`) with its restore job (`AR`) and restored copy (`AE`), and its
   undelivered access-log records (`AL`); every stripe they name goes to the GC queue after
   `[workers] gc_grace_s`, its index entry (`X`) removed;
   last the bucket record and its tenant index entry, so the name is free again only once
   nothing under it is left for a new owner to see;
2. each volume's journal segments and extent pointers (stripes to GC), attach lease and
   record;
3. the tenant's named KMS keys and aliases, and its access key records;

then the tenant record is marked `reclaimed`, and `tessera tenant delete` succeeds.

Before any of that, each step finishes a volume delete that was killed part way (its `VD`
record: `storage/volume_gone.py`), a many-part version's or upload's retirement that was
(its `RT` marker: `storage/retiring.py`), a many-part archive copy's staging that no swap
will take (its `SG` marker: `storage/archive_staging.py`), then a snapshot delete that was
(its `VC` marker: `VolumeService.finish_collect`). A marker whose step raises is logged and skipped for a
back-off that doubles per failure (`BACKOFF_FIRST_S` to `BACKOFF_MAX_S`): the other markers
and the tenant reclaims go on meanwhile, instead of that one marker failing every step. A
commit refused for the worker's lease (LeaseFenced) is no marker's failure: it ends the step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from storage import archive_staging, retiring
from storage.keyspace import (
    ACCESS_KEY,
    RETIRING,
    STAGING,
    TENANT,
    VOLUME_COLLECT,
    VOLUME_GONE,
    access_key_key,
    access_log_prefix,
    bucket_key,
    gc_key,
    journal_head_key,
    kms_alias_prefix,
    kms_key_prefix,
    next_key,
    object_prefix,
    space,
    span,
    stripe_index_key,
    tenant_bucket_key,
    tenant_bucket_prefix,
    tenant_key,
    unpack,
    upload_prefix,
    version_left_prefix,
    version_prefix,
    volume_lease_key,
    volume_prefix,
)
from storage.metadata import Item, MetadataStore, Txn
from storage.metadata.fence import LeaseFenced
from storage.records import AccessKey, Bucket, ObjectVersion, Tenant, pack
from storage.version_retire import retire_version
from storage.volume_gone import gone_volume_step, retire_pointers_step
from storage.volume_records import Volume
from storage.workers import WorkerState

if TYPE_CHECKING:
    from storage.volumes import VolumeService

log = logging.getLogger("tessera.reclaim")
BATCH = 200
BATCH_OPS = 512  # a batch stops taking version records here (etcd: --max-txn-ops 1024) ...
BATCH_BYTES = 512 * 1024  # ... or here (a request of at most 1.5 MiB)
BACKOFF_FIRST_S = 1.0  # a failing VD/VC marker's first pause; doubled per failure
BACKOFF_MAX_S = 300.0


class _Batch:
    """The keys one reclaim transaction deletes, the GC entries it queues, its compares."""

    def __init__(self, grace_s: float) -> None:
        self.due = time.time_ns() + int(grace_s * 1e9)
        self.compares: dict[bytes, int] = {}
        self.puts: dict[bytes, bytes] = {}
        self.deletes: list[bytes] = []

    def stripe(self, stripe_id: bytes, nodes: list[Any]) -> None:
        if stripe_id:
            if any(nodes):
                self.puts[gc_key(self.due, stripe_id)] = pack({"nodes": list(nodes)})
            self.deletes.append(stripe_index_key(stripe_id))

    def full(self) -> bool:
        """Whether the batch has grown to `BATCH_OPS` operations or `BATCH_BYTES`."""
        return (len(self.puts) + len(self.deletes) >= BATCH_OPS
                or sum(map(len, self.puts.values())) >= BATCH_BYTES)

    def drop(self, item: Item) -> None:
        self.compares[item.key] = item.revision
        self.deletes.append(item.key)

    def version(self, item: Item) -> None:
        """A version record with what goes with it (`version_retire`: its stripes, restore
        job, restored copy)."""
        self.drop(item)
        retire_version(ObjectVersion.decode(item.value), self.due, self.puts, self.deletes)

    async def commit(self, meta: MetadataStore) -> bool:
        return await meta.txn(Txn(compares=self.compares, puts=self.puts,
                                  deletes=tuple(dict.fromkeys(self.deletes))))


async def _bucket_step(meta: MetadataStore, tenant: str, name: str, grace_s: float) -> None:
    """One batch of work on one of the tenant's buckets (the last one deletes it)."""
    item = await meta.get(bucket_key(name))
    if item is None or Bucket.decode(item.value).tenant != tenant:
        await meta.txn(Txn(deletes=(tenant_bucket_key(tenant, name),)))  # a stale index entry
        return
    b = Bucket.decode(item.value)
    if b.config:
        b.config = {}
        await meta.txn(Txn(compares={item.key: item.revision}, puts={item.key: b.encode()}))
        return
    uploads = await meta.range(*span(upload_prefix(name)), limit=BATCH)
    if uploads:
        batch = _Batch(0.0)  # parts were never readable by anyone: no reads in flight
        for up in uploads:
            batch.drop(up)
            upload_id = unpack(up.key)[-1]
            # its parts in `retiring`'s bounded steps (the worker's marker pass finishes them)
            marker, value = retiring.upload_marker(name, unpack(up.key)[2], upload_id, [],
                                                   batch.due)
            batch.puts[marker] = value
        await batch.commit(meta)
        return
    dropped = (access_log_prefix(name), version_left_prefix(name))
    for prefix in (version_prefix(name), object_prefix(name), *dropped):
        records = await meta.range(*span(prefix), limit=BATCH)
        if records:
            batch = _Batch(grace_s)
            for rec in records:
                if batch.full():
                    break  # (many-part versions' markers carry their records)
                if prefix in dropped:
                    batch.drop(rec)  # undelivered access-log records, deleted versions' places
                else:
                    batch.version(rec)
            await batch.commit(meta)
            return
    await meta.txn(Txn(compares={item.key: item.revision},
                       deletes=(item.key, tenant_bucket_key(tenant, name))))


async def _volume_step(meta: MetadataStore, item: Item, grace_s: float) -> None:
    """One batch of a volume's journal segments, then extent pointers (both name a stripe);
    with none left, its lease and record."""
    vol = Volume.decode(item.value)
    if await retire_pointers_step(meta, vol.id, grace_s):
        return
    batch = _Batch(grace_s)
    batch.drop(item)
    batch.deletes.extend((volume_lease_key(vol.id), journal_head_key(vol.id)))
    await batch.commit(meta)


async def reclaim_step(meta: MetadataStore, tenant: str, grace_s: float) -> bool:
    """One batch of reclaiming a shredded tenant; True when nothing of it is left."""
    buckets = await meta.range(*span(tenant_bucket_prefix(tenant)), limit=1)
    if buckets:
        await _bucket_step(meta, tenant, unpack(buckets[0].key)[2], grace_s)
        return False
    volumes = await meta.range(*span(volume_prefix(tenant)), limit=1)
    if volumes:
        await _volume_step(meta, volumes[0], grace_s)
        return False
    for prefix in (kms_key_prefix(tenant), kms_alias_prefix(tenant)):
        named = await meta.range(*span(prefix), limit=BATCH)
        if named:  # named KMS keys (wrapped by the destroyed KEK) and their aliases
            await meta.txn(Txn(deletes=tuple(i.key for i in named)))
            return False
    keys = [i for i in await meta.range(*space(ACCESS_KEY), limit=100_000)
            if AccessKey.decode(i.value).tenant == tenant]
    if keys:
        await meta.txn(Txn(deletes=tuple(access_key_key(unpack(i.key)[-1]) for i in keys)))
    return True


async def remaining(meta: MetadataStore, tenant: str) -> dict[str, int]:
    """What a tenant still owns: buckets and volumes (a reclaim in progress shrinks them)."""
    return {"buckets": len(await meta.range(*span(tenant_bucket_prefix(tenant)),
                                            limit=100_000)),
            "volumes": len(await meta.range(*span(volume_prefix(tenant)), limit=100_000))}


class TenantReclaimer:
    """The `reclaim` worker: reclaims shredded tenants, one batch per step."""

    name = "reclaim"
    # on etcd a tenant record's change (a shred) wakes it (storage/workers/wakes), instead of
    # it reading every tenant record each second; the long pause bounds anything missed
    wake_prefix = space(TENANT)[0]
    watched_idle_s = 30.0

    def __init__(self, meta: MetadataStore, gc_grace_s: float,
                 volumes: VolumeService | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 orphan_grace_s: float = 86400.0) -> None:
        self._meta = meta
        self._grace_s = gc_grace_s
        self._volumes = volumes
        self._clock = clock
        self._staging = archive_staging.Sweep(meta, orphan_grace_s, clock)
        self._failing: dict[bytes, tuple[int, float]] = {}  # marker -> (failures, retry at)
        self.reclaimed = 0

    async def _finish_marker(self) -> bool:
        """One step of a marker a kill left: a volume delete (`VD`), a many-part version's
        or upload's retirement (`RT`, `retiring.finish`), an archive copy's staging nobody
        will swap in (`SG`, `archive_staging.Sweep`: only once abandoned, or seen unchanged
        for the orphan grace), else a snapshot delete (`VC`); False when none is due (a
        failing marker waits out its back-off)."""
        kinds: list[tuple[str, Callable[[Item], Any]]] = [
            (VOLUME_GONE, lambda it: gone_volume_step(self._meta, it, self._grace_s)),
            (RETIRING, lambda it: retiring.finish(self._meta, it)),
            (STAGING, self._staging.finish)]
        if self._volumes is not None:
            kinds.append((VOLUME_COLLECT, self._volumes.finish_collect))
        now = self._clock()
        seen: set[bytes] = set()
        for kind, finish in kinds:
            start, end = space(kind)
            while items := await self._meta.range(start, end, limit=BATCH):
                for item in items:
                    seen.add(item.key)
                    failed = self._failing.get(item.key)
                    if failed is not None and failed[1] > now:
                        continue
                    try:
                        if await finish(item) is False:
                            continue  # not due (a staging that may still be live)
                    except LeaseFenced:
                        raise  # not this marker's failure: another process holds the lease
                    except Exception:
                        n = failed[0] + 1 if failed else 1
                        self._failing[item.key] = (
                            n, now + min(BACKOFF_FIRST_S * 2 ** (n - 1), BACKOFF_MAX_S))
                        log.warning("finishing %r failed (%d times); retried later",
                                    unpack(item.key), n, exc_info=True)
                        continue
                    self._failing.pop(item.key, None)
                    return True
                if len(items) < BATCH:
                    break
                start = next_key(items[-1].key)
        # markers finished elsewhere (a delete's own loop) are forgotten: the map stays bounded
        self._failing = {k: v for k, v in self._failing.items() if k in seen}
        self._staging.keep(seen)
        return False

    async def step(self) -> WorkerState:
        if await self._finish_marker():  # a volume or snapshot delete killed before its end
            return WorkerState.BUSY
        for item in await self._meta.range(*space(TENANT), limit=100_000):
            t = Tenant.decode(item.value)
            if t.state != "shredded" or t.reclaimed:
                continue
            if not await reclaim_step(self._meta, t.name, self._grace_s):
                return WorkerState.BUSY
            t.reclaimed = time.time()
            if await self._meta.txn(Txn(compares={item.key: item.revision},
                                        puts={tenant_key(t.name): t.encode()})):
                self.reclaimed += 1
                log.info("tenant %s reclaimed", t.name)
            return WorkerState.BUSY
        return WorkerState.IDLE

