"""The key workers: `Rewrapper` rewraps DEKs of rotated tenants to their current KEK
version; `ShredScheduler` destroys the keys of tenants whose scheduled shred is due, and the
named KMS keys whose scheduled deletion is due (`storage.kms.purge_due`). The
operations that give them work (rotate, schedule a shred) are in `storage/keys_rotation.py`.
"""

from __future__ import annotations

import contextlib
import time

from storage import object_lock
from storage.crypto import keys
from storage.errors import KeyUnavailable, NotFound, StaleRecord
from storage.keys_rotation import LockNow, shred_now
from storage.keyspace import OBJECT, REWRAP, SHRED, VERSION, next_key, rewrap_key, space
from storage.keyspace import unpack as unpack_key
from storage.kms import purge_due, rewrap_keys
from storage.metadata import MetadataStore, Txn
from storage.records import ObjectVersion, pack, unpack
from storage.tenant_state import SHREDDED
from storage.tenants import TenantService
from storage.workers import WorkerState

BATCH = 256
SCAN_SPACES = (OBJECT, VERSION)


def _stale(v: ObjectVersion, current: int) -> bool:
    """Whether a DEK of the record (the version's, or its restored copy's) is wrapped under an
    older KEK version."""
    r = v.restore
    return v.kek_version != current or bool(r.get("dek") and r.get("kek_version") != current)


WATCHED_MAX_S = 30.0  # the longest sleep of a watched, idle shred scheduler
HOLD_RECHECK_S = 3600.0  # a scheduled shred held up by a legal hold looks again this often


class Rewrapper:
    """Rewraps DEKs of rotated tenants to their current KEK version, batch by batch."""

    name = "rewrap"
    # Idle only while no tenant is marked for rewrapping (a pass with work left is BUSY), so
    # on etcd a marker's arrival wakes it (storage/workers/wakes.py) instead of a 1 s poll.
    wake_prefix = space(REWRAP)[0]

    def __init__(self, meta: MetadataStore, tenants: TenantService) -> None:
        self._meta = meta
        self._tenants = tenants
        self._scan = 0  # index into SCAN_SPACES
        self._cursor: bytes | None = None
        self._pass_tenants: dict[str, int] = {}  # tenant -> marker revision at pass start
        self._left: set[str] = set()  # tenants with an old-version DEK seen this pass
        self.rewrapped = 0

    async def step(self) -> WorkerState:
        if self._cursor is None:
            items = await self._meta.range(*space(REWRAP), 100000)
            if not items:
                return WorkerState.IDLE
            self._pass_tenants = {unpack_key(i.key)[1]: i.revision for i in items}
            self._left = set()
            self._scan = 0
            self._cursor = space(SCAN_SPACES[0])[0]
        batch = await self._meta.range(self._cursor, space(SCAN_SPACES[self._scan])[1],
                                       limit=BATCH)
        current: dict[str, int | None] = {}
        for item in batch:
            v = ObjectVersion.decode(item.value)
            if v.tenant not in self._pass_tenants or v.delete_marker or not v.dek:
                continue
            if v.tenant not in current:
                current[v.tenant] = await self._current(v.tenant)
            cur = current[v.tenant]
            if cur is None or not _stale(v, cur):
                continue
            # A tenant is done only after a pass that found nothing to rewrap, so a PUT
            # that began before the rotation and committed mid-pass is caught next pass.
            self._left.add(v.tenant)
            await self._rewrap(item.key, item.revision, v, cur)
        if len(batch) == BATCH:
            self._cursor = next_key(batch[-1].key)
            return WorkerState.BUSY
        self._scan += 1
        if self._scan < len(SCAN_SPACES):
            self._cursor = space(SCAN_SPACES[self._scan])[0]
            return WorkerState.BUSY
        await self._finish_pass()
        return WorkerState.BUSY

    async def _current(self, tenant: str) -> int | None:
        try:
            t = await self._tenants.get(tenant)
        except NotFound:
            return None
        return None if t.state == SHREDDED else t.current_kek  # "shredding" may be refused

    async def _rewrap(self, key: bytes, revision: int, v: ObjectVersion, target: int) -> bool:
        """CAS-rewrap one manifest record; False if it changed under us (next pass)."""
        ident = keys.object_identity(v.tenant, v.bucket, v.key,
                                     v.identity_version or v.version_id)
        try:
            _, old = await self._tenants.kek(v.tenant, v.kek_version)
            _, new = await self._tenants.kek(v.tenant, target)
        except KeyUnavailable:
            return True  # shredded meanwhile: nothing left to protect
        if v.kek_version != target:
            inner = keys.unwrap_dek(old, v.tenant, ident, v.dek)
            v.dek = keys.wrap_dek(new, v.tenant, ident, inner)
            v.kek_version = target
        r = v.restore
        if r.get("dek") and r.get("kek_version") != target:  # a restored copy's own data key
            try:
                _, old_r = await self._tenants.kek(v.tenant, int(r["kek_version"]))
            except KeyUnavailable:
                return True
            ident_r = keys.object_identity(v.tenant, v.bucket, v.key, r["identity_version"])
            inner = keys.unwrap_dek(old_r, v.tenant, ident_r, r["dek"])
            v.restore = {**r, "dek": keys.wrap_dek(new, v.tenant, ident_r, inner),
                         "kek_version": target}
        if await self._meta.txn(Txn(compares={key: revision}, puts={key: v.encode()})):
            self.rewrapped += 1
            return True
        return False

    async def _finish_pass(self) -> None:
        for tenant, rev in self._pass_tenants.items():
            if tenant not in self._left:
                # The rotation rewraps the tenant's KMS keys right after its commit; a
                # process killed in between left them under the old KEK: done here too,
                # before the marker that says the rotation is complete goes
                if await self._current(tenant) is not None:
                    with contextlib.suppress(KeyUnavailable):  # shredded meanwhile
                        await rewrap_keys(self._meta, self._tenants, tenant)
                # Only clear the marker if no rotation happened during the pass.
                await self._meta.txn(Txn(compares={rewrap_key(tenant): rev},
                                         deletes=(rewrap_key(tenant),)))
        self._cursor = None


class ShredScheduler:
    """Destroys the keys of tenants whose scheduled shred is due, and KMS keys whose
    deletion is due."""

    name = "shred"
    # on etcd a scheduled shred wakes it (storage/workers/wakes); otherwise it sleeps until
    # the earliest one falls due, at most WATCHED_MAX_S (KMS key deletions are days away)
    wake_prefix = space(SHRED)[0]

    def __init__(self, meta: MetadataStore, tenants: TenantService,
                 lock_now: LockNow) -> None:
        self._meta = meta
        self._tenants = tenants
        self._lock_now = lock_now  # the clock retentions are judged by (storage.lock_clock)
        self._next_due = 0.0  # the earliest scheduled shred not yet due (0: none)

    @property
    def watched_idle_s(self) -> float:
        """The idle pause when scheduled shreds wake it: until the next one falls due."""
        if not self._next_due:
            return WATCHED_MAX_S
        return min(WATCHED_MAX_S, max(0.0, self._next_due - time.time()))

    async def step(self) -> WorkerState:
        now = time.time()
        self._next_due = 0.0
        for item in await self._meta.range(*space(SHRED), 1000):
            entry = unpack(item.value)
            if float(entry["due"]) > now:
                self._next_due = min(self._next_due or float("inf"), float(entry["due"]))
            else:
                tenant, bypass = unpack_key(item.key)[1], bool(entry.get("bypass_governance"))
                try:
                    # unfenced first: a recheck that a lock refuses anyway (a legal hold:
                    # hourly) refuses none of the tenant's writes for the length of its scan
                    locked = await object_lock.shred_blocker(self._meta, tenant,
                                                             self._lock_now, bypass)
                    if locked is not None:
                        await self._tenants.unfence(tenant)  # one a dead run left fenced
                        raise locked
                    await shred_now(self._meta, self._tenants, tenant, self._lock_now,
                                    bypass, item.revision)
                except StaleRecord:
                    continue  # cancelled (or rescheduled) while the locks were scanned
                except object_lock.TenantLocked as exc:  # locked meanwhile: wait it out
                    due = now + HOLD_RECHECK_S if exc.until is None else exc.until
                    # compare-and-swap: a cancel committed during the scan stays cancelled
                    await self._meta.txn(Txn(compares={item.key: item.revision},
                                             puts={item.key: pack({**entry, "due": due})}))
        await purge_due(self._meta)
        return WorkerState.IDLE
