"""Deleting a tenant: its record and every KMS key and alias of it, in steps that each fit
a metadata store's transaction limit (etcd's default --max-txn-ops is 128), resumable.

1. The record is marked "deleting" (compare-and-swap). From then on no KMS key, access
   key, bucket or volume is made: their creates compare the record's revision and refuse
   this state, so the keys listed next are all the tenant will have, and parallel creates
   before the mark do not race on the record (they only compare it). A bucket or volume
   made before the mark (after the caller's check) undoes the mark: TenantNotEmpty. So
   does a version sealed with one of its KMS keys (written into another tenant's bucket
   under a grant) that is under a legal hold or a retention still ahead: deleting the keys
   would destroy it (`object_lock.shred_blocker`, as for a shred; no GOVERNANCE bypass
   here): TenantLocked. The mark stops the tenant's writes, so no such version is added
   after the scan.
2. With `expect` (the key ids the operator confirmed) the listing must equal them; else
   the mark is undone (if this delete made it) and Conflict: nothing was deleted.
3. `first` runs: the access keys' revocation, before the record goes (a same-name tenant
   made later must not inherit a live key).
4. The keys and aliases go in pages of at most PAGE deletes, each comparing the record.
5. The record goes last, leaving the name's tombstone (`tenant_gone_key`): a tenant made
   later under it needs `reuse` (grants that named this one would pass to it), and its
   canonical id's (`canonical_gone_key`): no other tenant is given that id (ACL grants).
A delete that stopped after step 1 (a crash, a store error) leaves the record "deleting";
running the delete again finishes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from storage.errors import Conflict, NotFound, TenantNotEmpty
from storage.keyspace import (
    canonical_gone_key,
    kms_alias_prefix,
    kms_key_prefix,
    span,
    tenant_bucket_prefix,
    tenant_gone_key,
    tenant_key,
    volume_prefix,
)
from storage.keyspace import unpack as unpack_key
from storage.metadata import Item, MetadataStore, Txn
from storage.object_lock import LockNow, shred_blocker
from storage.records import Tenant
from storage.tenant_state import DELETING, SHREDDED

PAGE = 100  # deletes per transaction: under etcd's default --max-txn-ops (128)
TRIES = 8


async def delete(meta: MetadataStore, tenant: str, expect: set[str] | None,
                 first: Callable[[], Awaitable[None]] | None, lock_now: LockNow) -> int:
    """Delete `tenant` as above; returns how many KMS keys went. `lock_now`: the clock
    retentions are judged by (`LockClock.now`)."""
    tk = tenant_key(tenant)
    item, prev = await _mark(meta, tenant)
    await _owns_nothing(meta, tenant, prev)
    await _seals_nothing_locked(meta, tenant, prev, lock_now)
    keys_ = await meta.range(*span(kms_key_prefix(tenant)), limit=100000)
    if expect is not None:
        have = {str(unpack_key(i.key)[2]) for i in keys_}
        if have != expect:
            undone = prev != DELETING and await _unmark(meta, tk, prev)
            done = ("nothing was deleted" if undone else "the tenant stays marked deleting "
                    "(an earlier delete began it): confirm the keys it has now")
            raise Conflict(f"tenant {tenant!r}'s KMS keys changed since they were listed "
                           f"(now {len(have)}: {', '.join(sorted(have)) or 'none'}); {done}: "
                           "run the delete again")
    if first is not None:
        await first()
    aliases = await meta.range(*span(kms_alias_prefix(tenant)), limit=100000)
    gone = [i.key for i in [*keys_, *aliases]]
    rev = item.revision
    for at in range(0, len(gone), PAGE):
        rev = await _in_step(meta, tenant, rev, gone[at:at + PAGE], at, len(gone))
    cid = Tenant.decode(item.value).canonical_id or tenant
    await _in_step(meta, tenant, rev, [tk], len(gone), len(gone),
                   {tenant_gone_key(tenant): b"", canonical_gone_key(cid): b""})
    return len(keys_)


async def _mark(meta: MetadataStore, tenant: str) -> tuple[Item, str]:
    """The record marked "deleting" and the state this call changed (DELETING: it was
    marked already, by an earlier or concurrent delete)."""
    tk, prev = tenant_key(tenant), DELETING
    for _ in range(TRIES):
        item = await meta.get(tk)
        if item is None:
            raise NotFound(f"tenant {tenant!r} does not exist")
        t = Tenant.decode(item.value)
        if t.state == DELETING:
            return item, prev
        was, t.state = t.state, DELETING
        if await meta.txn(Txn(compares={tk: item.revision}, puts={tk: t.encode()})):
            prev = was
    raise Conflict(f"tenant {tenant!r} kept changing while its delete began; nothing was "
                   "deleted: run the delete again")


async def _owns_nothing(meta: MetadataStore, tenant: str, prev: str) -> None:
    """After the mark (no bucket or volume is made from then on: `tenant_state.tenant_compare`),
    TenantNotEmpty if the tenant owns one still (made since the caller's check, before the
    mark); the mark is undone first, so the tenant can delete them."""
    for what, prefix in (("buckets", tenant_bucket_prefix(tenant)),
                         ("volumes", volume_prefix(tenant))):
        if await meta.range(*span(prefix), limit=1):
            if prev == DELETING:  # marked by an earlier delete: back to what it can be
                t = await meta.get(tenant_key(tenant))
                prev = "active" if t is None or Tenant.decode(t.value).keks else SHREDDED
            undone = await _unmark(meta, tenant_key(tenant), prev)
            raise TenantNotEmpty(f"tenant {tenant!r} still owns {what} (made while its delete "
                                 f"began); {'nothing was deleted' if undone else 'it stays marked deleting'}"
                                 f": delete its {what} first, then run the delete again")


async def _seals_nothing_locked(meta: MetadataStore, tenant: str, prev: str,
                                lock_now: LockNow) -> None:
    """After the mark (the tenant writes nothing more), TenantLocked if its keys seal a
    locked version (in another tenant's bucket: it owns none by now); the mark is undone
    first. A shredded tenant's keys are destroyed already: nothing to check."""
    t = await meta.get(tenant_key(tenant))
    if t is None or not Tenant.decode(t.value).keks:
        return
    locked = await shred_blocker(meta, tenant, lock_now)
    if locked is not None:
        if prev != DELETING:
            await _unmark(meta, tenant_key(tenant), prev)
        raise locked


async def _unmark(meta: MetadataStore, tk: bytes, prev: str) -> bool:
    """Back from "deleting" to `prev` (a refused confirmation); whether it was done."""
    for _ in range(TRIES):
        item = await meta.get(tk)
        if item is None:
            return False
        t = Tenant.decode(item.value)
        if t.state != DELETING:
            return False
        t.state = prev
        if await meta.txn(Txn(compares={tk: item.revision}, puts={tk: t.encode()})):
            return True
    return False


async def _in_step(meta: MetadataStore, tenant: str, rev: int, deletes: list[bytes],
                   done: int, total: int, puts: dict[bytes, bytes] | None = None) -> int:
    """Delete `deletes` comparing the record at `rev` (re-read if only it moved: an edit
    of a tenant being deleted); the revision it was at. Conflict if the record is gone or
    no longer "deleting" (another delete finished it, maybe a same-name tenant since)."""
    tk = tenant_key(tenant)
    for _ in range(TRIES):
        if await meta.txn(Txn(compares={tk: rev}, puts=puts or {}, deletes=tuple(deletes))):
            return rev
        item = await meta.get(tk)
        if item is None or Tenant.decode(item.value).state != DELETING:
            break
        rev = item.revision
    raise Conflict(f"tenant {tenant!r} changed while it was deleted (another delete ran?); "
                   f"its access keys were revoked and {done} of its {total} KMS keys and "
                   "aliases were deleted: check `tessera tenant show` and run the delete "
                   "again if it is still there")
