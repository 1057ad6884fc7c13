"""Key rotation and crypto-shred scheduling: the operations (the workers that carry them out
are in `storage/workers/keys.py`).

`rotate` makes a new KEK version current and marks the tenant for rewrapping (`(RW, tenant)`).
The `Rewrapper` worker walks every object manifest (current `O` and history `V` records),
unwraps each DEK under the KEK version that wrapped it and rewraps it under the current one
with a compare-and-swap on the record; shard data is never touched, and old KEK versions are
kept so reads that hold an older manifest keep working. A marker is cleared after a whole
pass that found nothing left to rewrap for its tenant (so at least two passes).

`schedule_shred` records a pending shred (`(TS, tenant)`) due after a waiting period; the
`ShredScheduler` worker destroys the tenant's keys when it is due (cancel before then). A
shred with no waiting period is done at once and answered only once every process has
stopped serving the tenant (`TenantService.settled`).
"""

from __future__ import annotations

import time

from storage import object_lock
from storage.errors import KeyUnavailable, NotFound
from storage.keyspace import REWRAP, rewrap_key, shred_key, space
from storage.keyspace import unpack as unpack_key
from storage.kms import rewrap_keys
from storage.metadata import MetadataStore, Txn
from storage.object_lock import LockNow
from storage.records import pack, unpack
from storage.tenant_state import SHREDDED
from storage.tenants import TenantService


async def rotate(meta: MetadataStore, tenants: TenantService, tenant: str) -> int:
    """New KEK version for the tenant; DEKs are rewrapped by the `Rewrapper` worker, the
    tenant's KMS keys (`storage.kms`) here (and again by the worker before it ends the
    rewrap, for a rotation killed right after its commit)."""
    await tenants.get(tenant)
    # One transaction: a marker put first let a whole rewrap pass run before the rotation,
    # find nothing stale under the old current version and clear it for good.
    version = await tenants.rotate(tenant, {rewrap_key(tenant): pack({"since": time.time()})})
    await rewrap_keys(meta, tenants, tenant)  # a handful of KMS keys: rewrapped right away
    return version


async def pending_rewraps(meta: MetadataStore) -> list[str]:
    items = await meta.range(*space(REWRAP), limit=100000)
    return [unpack_key(i.key)[1] for i in items]


async def schedule_shred(meta: MetadataStore, tenants: TenantService, tenant: str,
                         wait_s: float, by: str, lock_now: LockNow,
                         bypass_governance: bool = False) -> float:
    """Shred now (wait 0) or at now + wait_s; returns the due time (epoch seconds).
    Refused (TenantLocked) while a version is under a legal hold, or under COMPLIANCE (or,
    without `bypass_governance`, GOVERNANCE) retention past the due time. `lock_now`: the
    clock retentions are judged by (`LockClock.now`: required, one way to judge them)."""
    t = await tenants.get(tenant)
    if t.state == SHREDDED:  # "shredding" left by a shred that died: this one resolves it
        raise KeyUnavailable(f"tenant {tenant!r} is already shredded")
    due = time.time() + max(0.0, wait_s)
    if wait_s <= 0:  # shred_now scans (fenced), and sets a refused tenant active again
        await shred_now(meta, tenants, tenant, lock_now, bypass_governance)
        await tenants.settled()  # answered "shredded" once no process serves the tenant
    else:
        locked = await object_lock.shred_blocker(meta, tenant, lock_now, bypass_governance)
        if locked is not None and (locked.until is None or locked.until > due):
            raise locked
        await meta.put(shred_key(tenant), pack({"due": due, "by": by,
                                                "bypass_governance": bypass_governance}))
    return due


async def cancel_shred(meta: MetadataStore, tenants: TenantService, tenant: str) -> None:
    """Drop the scheduled shred and end a fence ("shredding", left by a shred that died
    after fencing): the tenant takes writes, rotation and new access keys again. Safe next
    to a shred still running: the unfence changes the tenant record, so its
    `TenantService.shred(fenced=)` fails and it fences and scans again (a scheduled one,
    its record deleted here, stops: StaleRecord). NotFound if there was nothing to cancel."""
    scheduled = await meta.get(shred_key(tenant)) is not None
    if scheduled:
        await meta.delete(shred_key(tenant))
    if not await tenants.unfence(tenant) and not scheduled:
        raise NotFound(f"no shred of tenant {tenant!r} is scheduled or in progress")


async def pending_shred(meta: MetadataStore, tenant: str) -> float | None:
    item = await meta.get(shred_key(tenant))
    return None if item is None else float(unpack(item.value)["due"])


async def shred_now(meta: MetadataStore, tenants: TenantService, tenant: str,
                    lock_now: LockNow, bypass_governance: bool = False,
                    schedule_rev: int | None = None) -> None:
    """Destroy the tenant's keys, unless locked versions remain (TenantLocked): see
    `object_lock.shred_blocker`. `schedule_rev`: the revision of the scheduled shred being
    run; a cancel committed meanwhile wins (StaleRecord).

    The tenant is fenced first (`TenantService.fence`: no write to its buckets commits),
    then scanned, then shredded only if the record is still as fenced; so a lock set by a
    write racing the shred either committed before the scan (which sees it) or is refused.
    A refused or failed shred puts the tenant back to "active"."""
    compares = None if schedule_rev is None else {shred_key(tenant): schedule_rev}
    fenced = await tenants.fence(tenant)
    try:
        while True:
            locked = await object_lock.shred_blocker(meta, tenant, lock_now,
                                                     bypass_governance)
            if locked is not None:
                raise locked
            if await tenants.shred(tenant, compares, fenced):
                break
            fenced = await tenants.fence(tenant)  # changed meanwhile: fence, scan again
    except BaseException:
        await tenants.unfence(tenant)
        raise
    await meta.txn(Txn(deletes=(shred_key(tenant), rewrap_key(tenant))))
    scrub = getattr(meta, "scrub", None)  # drop old copies the backend keeps (SQLite WAL)
    if scrub is not None:
        await scrub()
