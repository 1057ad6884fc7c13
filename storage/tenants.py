"""Tenants, their access keys and their key-encryption keys.

A tenant's KEKs are stored wrapped by the root key; unwrapped KEKs and access secrets are
cached for a short time only. Shredding deletes every wrapped KEK, after which no DEK of
the tenant can be unwrapped by anyone. Access key records (issue, list, revoke, the key
wrapping their secrets) are the `AccessKeys` mixin in `storage/access_keys.py`; looking one
up for a request (`credential`) is here, with the caches it shares.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from contextvars import ContextVar

from storage.access_keys import AccessKeys, Credential
from storage.crypto import aead, keys
from storage.errors import (
    Conflict,
    InvalidInput,
    KeyUnavailable,
    NotFound,
    StaleRecord,
    StorageError,
    TenantDeleting,
    TenantShredding,
)
from storage.keyspace import (
    TENANT,
    access_key_key,
    canonical_gone_key,
    space,
    tenant_gone_key,
    tenant_key,
)
from storage.metadata import Item, MetadataStore, Txn
from storage.records import AccessKey, Tenant, same_incarnation
from storage.sharedreads import SharedReads
from storage.tenant_state import (
    DELETING,
    SHREDDED,
    SHREDDING,
    deleting_message,
    require_active,
)

CACHE_TTL_S = 60.0
SHORT_TTL_S = 5.0  # identities; keys, access keys, tenant state also only while the stamp holds
_CANONICAL_ID = re.compile(r"[A-Za-z0-9$._:-]{1,128}")
# The auth change stamp one request read (empty until its first check): every check of the
# request (credential, public access block) shares one read of it, as fresh as the request.
_REQUEST_STAMP: ContextVar[list[int] | None] = ContextVar("tessera_auth_stamp", default=None)


def begin_request() -> None:
    """Start a request's scope (called by the S3 server per request, in its own task): its
    auth checks share one read of the auth change stamp, made after the request arrived.
    Outside such a scope (admin API, workers) every check reads the stamp afresh."""
    _REQUEST_STAMP.set([])


def _holds(entry: tuple[float, int, *tuple[object, ...]] | None, now: float,
           stamp: int | None) -> bool:
    """Whether a stamped cache entry (expiry, auth change stamp, ...) answers at `now`:
    before its expiry and under the same stamp (None: the stamp cannot be read now, and
    the expiry alone bounds it)."""
    return entry is not None and entry[0] > now and stamp in (None, entry[1])


def _valid_tenant_name(name: str) -> bool:
    return 1 <= len(name) <= 63 and all(c.isalnum() or c in "-_" for c in name) and name.isascii()


class TenantService(AccessKeys):
    def __init__(self, meta: MetadataStore, root: keys.RootKeyProvider) -> None:
        self._meta = meta
        self._root = root
        self._reads = SharedReads(meta)  # cache misses under load: one read per record
        # (tenant, version) -> (expiry, KEK, the wrapped blob it was opened from)
        self._kek_cache: dict[tuple[str, int], tuple[float, bytes, bytes]] = {}
        # tenant -> (named-version hits valid until, auth change stamp read before the look)
        self._kek_checked: dict[str, tuple[float, int]] = {}
        self._forgotten: dict[str, int] = {}  # tenant -> times its keys were dropped
        # access key / tenant -> (expiry, auth change stamp read before the record, value):
        # used only while the store's stamp (`auth_stamp`) is unchanged, so a key revoked,
        # a public access block changed or a tenant shredded through any gateway is obeyed
        # by the next request; the expiry counts from when the read began
        self._secret_cache: dict[str, tuple[float, int, Credential | None]] = {}
        self._sk: bytes | None = None
        self._ident_cache: dict[str, tuple[float, tuple[str, str]]] = {}
        self._pab_cache: dict[str, tuple[float, int, dict[str, bool]]] = {}
        # tenant -> (expiry, auth change stamp, its state: None when it has no record, the
        # record as read)
        self._state_cache: dict[str, tuple[float, int, str | None, Item | None]] = {}
        # tenant -> (expiry, current KEK version, revision of the record it was read from)
        self._current_cache: dict[str, tuple[float, int, int]] = {}

    async def create(self, name: str, reuse: bool = False) -> Tenant:
        """A new tenant. The name of a deleted one (or a deleted one's canonical id, which
        the new tenant's is by default) only with `reuse`: grants naming it in other
        tenants' bucket policies and ACLs pass to the new tenant (AWS never reuses an
        account id), so the operator must say they were checked."""
        if not _valid_tenant_name(name):
            raise InvalidInput("tenant names are 1-63 letters, digits, '-' or '_'")
        t = Tenant(name=name, created=time.time(),
                   keks={1: keys.new_kek(self._root, name, 1)}, current_kek=1,
                   incarnation=secrets.token_hex(8))
        gone = (tenant_gone_key(name), canonical_gone_key(name))
        if not await self._meta.txn(Txn(compares={tenant_key(name): 0,
                                                  **({} if reuse else dict.fromkeys(gone, 0))},
                                        puts={tenant_key(name): t.encode()},
                                        deletes=gone[:1] if reuse else ())):
            if not reuse and await self._meta.get(gone[0]) is not None:
                raise Conflict(f"the name {name!r} belonged to a deleted tenant; bucket "
                               "policies and ACLs of other tenants that grant it would "
                               "grant the new tenant: check them, then create it with "
                               "--reuse-name (console: reuse a deleted tenant's name)")
            if not reuse and await self._meta.get(gone[1]) is not None:
                raise Conflict(f"{name!r} was a deleted tenant's canonical id, which the new "
                               "tenant's would be: ACL grants that name it would grant the "
                               "new tenant: check them, then create it with --reuse-name")
            raise Conflict(f"tenant {name!r} already exists")
        return t

    async def was_deleted(self, name: str) -> bool:
        """Whether `name` belonged to a deleted tenant not made again (`create` with
        `reuse` clears this): a look-up of it can say so instead of "does not exist"."""
        return await self._meta.get(tenant_gone_key(name)) is not None

    async def get(self, name: str) -> Tenant:
        item = await self._meta.get(tenant_key(name))
        if item is None:
            raise NotFound(f"tenant {name!r} does not exist")
        return Tenant.decode(item.value)

    async def list(self) -> list[Tenant]:
        items = await self._meta.range(*space(TENANT), limit=100000)
        return [Tenant.decode(i.value) for i in items]

    # S3 identity ---------------------------------------------------------------------------

    async def set_identity(self, name: str, canonical_id: str | None = None,
                           display_name: str | None = None, email: str | None = None,
                           ) -> Tenant:
        """Set the tenant's S3 canonical id, display name or email (ACL owner and grantee).

        A canonical id or email held by another tenant is refused (Conflict), and so is a
        deleted tenant's canonical id (ACL grants by id that named it would pass to this
        tenant; AWS never reuses one), compared absent in the write. Refused while the
        tenant is being deleted (the delete records the canonical id it had)."""
        if canonical_id is not None and not _CANONICAL_ID.fullmatch(canonical_id):
            raise InvalidInput("a canonical id is 1-128 letters, digits or '$._:-'")
        if email is not None and email and "@" not in email:
            raise InvalidInput("an email address holds an '@'")
        for other in await self.list():
            if other.name == name:
                continue
            if canonical_id and canonical_id in (other.canonical_id or other.name, other.name):
                raise Conflict(f"canonical id {canonical_id!r} belongs to another tenant")
            if email and other.email.lower() == email.lower():
                raise Conflict(f"email {email!r} belongs to another tenant")
        gone = canonical_gone_key(canonical_id) if canonical_id else None
        while True:
            item = await self._meta.get(tenant_key(name))
            if item is None:
                raise NotFound(f"tenant {name!r} does not exist")
            t = Tenant.decode(item.value)
            if t.state == DELETING:
                raise TenantDeleting(deleting_message(name))
            taken = gone if gone is not None and canonical_id != (t.canonical_id or name) \
                else None  # (its own id, kept: a tenant made with `reuse` holds its name's)
            if canonical_id is not None:
                t.canonical_id = canonical_id
            if display_name is not None:
                t.display_name = display_name
            if email is not None:
                t.email = email
            if await self._meta.txn(Txn(compares={item.key: item.revision,
                                                  **({taken: 0} if taken else {})},
                                        puts={item.key: t.encode()})):
                self._ident_cache.pop(name, None)
                self._reads.forget(item.key)
                return t
            if taken is not None and await self._meta.get(taken) is not None:
                raise Conflict(f"canonical id {canonical_id!r} belonged to a deleted tenant: "
                               "ACL grants that name it would grant this tenant; a deleted "
                               "tenant's canonical id is not given again")

    async def set_public_access_block(self, name: str, flags: dict[str, bool]) -> Tenant:
        """The tenant-level (account) public access block; {} removes it."""
        while True:
            item = await self._meta.get(tenant_key(name))
            if item is None:
                raise NotFound(f"tenant {name!r} does not exist")
            t = Tenant.decode(item.value)
            t.public_access_block = dict(flags)
            if await self._meta.txn(Txn(compares={item.key: item.revision},
                                        puts={item.key: t.encode()})):
                self._pab_cache.pop(name, None)
                self._reads.forget(item.key)
                return t

    async def public_access_block(self, name: str) -> dict[str, bool]:
        """The tenant-level public access block flags, cached while the auth stamp holds."""
        now, stamp = time.monotonic(), await self._stamp()
        hit = self._pab_cache.get(name)
        if _holds(hit, now, stamp):
            return hit[2]
        await self._refresh(name, stamp)
        return self._pab_cache[name][2]

    async def _stamp(self) -> int:
        """The store's auth change stamp, read once per request (see `begin_request`)."""
        held = _REQUEST_STAMP.get()
        if held:
            return held[0]
        stamp = await self._meta.auth_stamp()
        if held is not None:
            held.append(stamp)
        return stamp

    async def _stamp_if_readable(self) -> int | None:
        """The auth change stamp, or None while the store cannot tell it (an etcd watch
        down and the store unreachable): the tenant state and KEK caches then hold for
        SHORT_TTL_S alone, the bound `settled` waits where the stamp can lag, so a store
        blip does not fail reads (a mounted volume's: ext4 aborts on EIO) a cache can
        answer. SQLite's stamp is a memory read and never fails."""
        try:
            return await self._stamp()
        except StorageError:
            return None

    async def _read(self, key: bytes, stamp: int) -> tuple[float, Item | None]:
        """A shared read of a record these caches keep, begun after the auth change stamp
        `stamp` was read, again if this process changed it meanwhile (a read begun before
        a revoke or shred must not be cached after it); with the time.monotonic() the
        read began, from which a cache of it counts its SHORT_TTL_S (`settled`)."""
        while True:
            before = self._reads.generation(key)
            began, item = await self._reads.read(key, stamp)
            if self._reads.generation(key) == before:
                return began, item

    async def _refresh(self, name: str, stamp: int) -> None:
        """Read the tenant record once for the caches (identity, public access block and
        state: every request to a bucket needs them), after reading the auth stamp `stamp`."""
        began, item = await self._read(tenant_key(name), stamp)
        t = Tenant.decode(item.value) if item is not None else None
        flags = dict(t.public_access_block) if t is not None else {}
        ident = ((t.canonical_id or name, t.display_name or name) if t is not None
                 else (name, name))
        until = began + SHORT_TTL_S
        self._pab_cache[name] = (until, stamp, flags)
        self._ident_cache[name] = (until, ident)
        self._state_cache[name] = (until, stamp, t.state if t is not None else None, item)

    async def active(self, name: str) -> bool:
        """Whether the tenant exists and is not shredded (one being shredded still is), cached while the auth change
        stamp holds (a shred anywhere changes it: obeyed from the next request, as its
        keys stop answering) and SHORT_TTL_S at most."""
        return await self._state(name) not in (None, SHREDDED)

    async def _state(self, name: str) -> str | None:
        """The tenant's state (None: no record), cached as `active` says."""
        return (await self._cached(name))[2]

    async def record(self, name: str) -> Item | None:
        """The tenant's record as cached for `active` (the request's own auth check read it):
        a guess for a compare-and-swap, which must compare its revision."""
        return (await self._cached(name))[3]

    async def _cached(self, name: str) -> tuple[float, int, str | None, Item | None]:
        now, stamp = time.monotonic(), await self._stamp_if_readable()
        hit = self._state_cache.get(name)
        if hit is not None and _holds(hit, now, stamp):
            return hit
        await self._refresh(name, await self._stamp() if stamp is None else stamp)
        return self._state_cache[name]

    async def identity(self, name: str) -> tuple[str, str]:
        """(canonical id, display name) of a tenant, briefly cached; the name for both by
        default, and for a tenant that no longer exists."""
        now = time.monotonic()
        hit = self._ident_cache.get(name)
        if hit and hit[0] > now:
            return hit[1]
        await self._refresh(name, await self._stamp())
        return self._ident_cache[name][1]

    async def by_canonical_id(self, canonical_id: str) -> Tenant | None:
        """The active tenant with this S3 canonical id (by default its name), or None."""
        for t in await self.list():
            if t.state != SHREDDED and (t.canonical_id or t.name) == canonical_id:
                return t
        return None

    async def by_email(self, email: str) -> Tenant | None:
        for t in await self.list():
            if t.state != SHREDDED and t.email and t.email.lower() == email.lower():
                return t
        return None

    async def kek(self, tenant: str, version: int | None = None) -> tuple[int, bytes]:
        """The tenant's KEK (current version unless named), unwrapped, briefly cached.

        The current version is always read from the tenant record (a rotation or a shred
        takes effect at once in every process); a named version (every read names one) is
        answered from the cache only within SHORT_TTL_S of this process's last look at the
        record and while the auth change stamp read before that look holds, so a shred
        made through another gateway process (which changes the stamp) stops its reads
        from the next request, and the shredded tenant's keys are then dropped from this
        process's memory. Opening with the root key is skipped when the record still holds
        the wrapped blob the cached key was opened from."""
        now, stamp = time.monotonic(), await self._stamp_if_readable()
        checked = self._kek_checked.get(tenant)
        if version is not None and _holds(checked, now, stamp):
            hit = self._kek_cache.get((tenant, version))
            if hit and hit[0] > now:
                return version, hit[1]
        forgotten = self._forgotten.get(tenant, 0)
        t = await self.get(tenant)
        if t.state == SHREDDED or not t.keks:
            self._forget_keks(tenant)
            raise KeyUnavailable(f"the keys of tenant {tenant!r} were destroyed")
        keep = self._forgotten.get(tenant, 0) == forgotten  # no shred here while it read:
        if keep and stamp is not None:  # a record read before a shred must not bring its
            self._kek_checked[tenant] = (now + SHORT_TTL_S, stamp)  # keys back to the cache
        v = t.current_kek if version is None else version
        if v not in t.keks:
            raise KeyUnavailable(f"key version {v} of tenant {tenant!r} is gone")
        return v, self._open(tenant, v, t.keks[v], now, keep)

    def _open(self, tenant: str, v: int, wrapped: bytes, now: float,
              keep: bool = True) -> bytes:
        """KEK version v from its wrapped blob, opened with the root key only when the
        cache does not hold one opened from that very blob; cached when `keep`."""
        hit = self._kek_cache.get((tenant, v))
        if hit is not None and hit[0] > now and hit[2] == wrapped:
            return hit[1]
        kek = keys.open_kek(self._root, tenant, v, wrapped)
        if keep:
            self._kek_cache[(tenant, v)] = (now + CACHE_TTL_S, kek, wrapped)
        return kek

    async def current_kek(self, tenant: str) -> tuple[int, bytes, int]:
        """The tenant's current KEK (version, key) and the revision of the tenant record it
        was read from, briefly cached: no metadata read per PUT. A commit sealed with it
        compares that revision (`revalidate` on failure), so a rotation or a shred made
        through any gateway fails the commit rather than being acted on late."""
        now = time.monotonic()
        hit = self._current_cache.get(tenant)
        if hit and hit[0] > now:
            kek = self._kek_cache.get((tenant, hit[1]))
            if kek and kek[0] > now:
                return hit[1], kek[1], hit[2]
        _, item = await self._read(tenant_key(tenant), await self._stamp())
        if item is None:
            raise NotFound(f"tenant {tenant!r} does not exist")
        t = Tenant.decode(item.value)
        rev = self.revalidate(tenant, t.current_kek, item)
        return t.current_kek, self._open(tenant, t.current_kek, t.keks[t.current_kek], now), rev

    def revalidate(self, tenant: str, version: int | None, item: Item | None) -> int:
        """The revision of tenant record `item` (fresh from the store) if KEK `version` (the
        current one if None) is usable in it, else KeyUnavailable (TenantShredding while a
        shred scans: no write commits then); refreshes the cache."""
        t = Tenant.decode(item.value) if item is not None else None
        if t is not None and t.state == SHREDDING:
            self._current_cache.pop(tenant, None)
            raise TenantShredding(f"tenant {tenant!r} is being shredded")
        if t is not None and t.state == DELETING:  # a cut-short delete: it reads, no writes
            self._current_cache.pop(tenant, None)
            raise TenantDeleting(deleting_message(tenant))
        if t is None or t.state != "active" or not t.keks:
            self._current_cache.pop(tenant, None)
            raise KeyUnavailable(f"the keys of tenant {tenant!r} were destroyed")
        if version is not None and version not in t.keks:
            raise KeyUnavailable(f"key version {version} of tenant {tenant!r} is gone")
        assert item is not None
        self._current_cache[tenant] = (time.monotonic() + CACHE_TTL_S, t.current_kek,
                                       item.revision)
        return item.revision

    async def revision(self, tenant: str) -> int:
        """The revision of the tenant record while the tenant takes writes (KeyUnavailable,
        TenantShredding otherwise), cached like `current_kek`'s: a write that changes a
        version compares it in its transaction, so it cannot commit once a shred fenced
        the tenant (`fence`), whatever the cache held."""
        hit = self._current_cache.get(tenant)
        if hit and hit[0] > time.monotonic():
            return hit[2]
        _, item = await self._read(tenant_key(tenant), await self._stamp())
        return self.revalidate(tenant, None, item)

    async def writer_revision(self, tenant: str) -> int:
        """The revision of the record of `tenant`, writing into another tenant's bucket
        under a grant, as its request's auth check cached it (no read; a stale guess fails
        the commit's compare, which reads it afresh: `writer_check`)."""
        return self.writer_check(tenant, await self.record(tenant))

    @staticmethod
    def writer_check(tenant: str, item: Item | None) -> int:
        """The revision of `item`, the writer's record, while it may write: refused once
        its delete began (TenantDeleting, S3 AccessDenied) or it is gone, shredding or
        shredded (`require_active`)."""
        if item is None:
            raise TenantDeleting(f"tenant {tenant!r} was deleted while its request ran; "
                                 "nothing was written")
        require_active(Tenant.decode(item.value))
        return item.revision

    async def rotate(self, tenant: str, marks: dict[bytes, bytes] | None = None) -> int:
        """Add a new KEK version and make it current; old versions stay until rewrapped.
        `marks` are put in the same transaction (the rewrap marker: a rewrap pass that sees
        it also sees the new current version)."""
        while True:
            item = await self._meta.get(tenant_key(tenant))
            if item is None:
                raise NotFound(f"tenant {tenant!r} does not exist")
            t = Tenant.decode(item.value)
            require_active(t)
            v = max(t.keks) + 1
            t.keks[v] = keys.new_kek(self._root, tenant, v)
            t.current_kek = v
            if await self._meta.txn(Txn(compares={item.key: item.revision},
                                        puts={**(marks or {}), item.key: t.encode()})):
                self._current_cache.pop(tenant, None)
                self._reads.forget(item.key)
                return v

    def _forget_keks(self, tenant: str) -> None:
        """Drop every cached key of `tenant` (it was shredded here or elsewhere)."""
        self._kek_cache = {k: v for k, v in self._kek_cache.items() if k[0] != tenant}
        self._current_cache.pop(tenant, None)
        self._kek_checked.pop(tenant, None)
        self._forgotten[tenant] = self._forgotten.get(tenant, 0) + 1  # reads in flight

    async def settled(self) -> None:
        """Return once no process can answer from what it cached about tenants before now:
        after a shred, no gateway process (this one's siblings, or a gateway on another
        host) serves the tenant's data or records to a request that arrives later. Every
        such cache holds only while the auth change stamp does; where the store bumps it
        before the write returns (SQLite: a shared counter), that is at once. Where
        processes learn it from a watch (etcd), whose event may come late, wait for the
        outer bound too: SHORT_TTL_S, counted by every cache from when its read began."""
        if not self._meta.auth_stamp_exact:
            await asyncio.sleep(SHORT_TTL_S)

    async def fence(self, tenant: str) -> int:
        """Put the tenant in the "shredding" state, in which no write to its buckets
        commits: every commit or edit of a version compares the tenant record's revision
        (`revision`, `current_kek`) and refuses it in this state (TenantShredding). Returns
        the revision of the record seen fenced: while it stands, nothing is written, so a
        lock scan begun after this sees every lock the tenant will have. The state is in
        the tenant record, so it bumps the auth change stamp like a shred. (A shredded
        tenant stays so: shredding it again only rewrites the record.)"""
        while True:
            item = await self._meta.get(tenant_key(tenant))
            if item is None:
                raise NotFound(f"tenant {tenant!r} does not exist")
            t = Tenant.decode(item.value)
            if t.state != "active":  # fenced (by us or a concurrent shred), or shredded
                self._current_cache.pop(tenant, None)
                return item.revision
            t.state = SHREDDING
            await self._meta.txn(Txn(compares={item.key: item.revision},
                                     puts={item.key: t.encode()}))
            self._reads.forget(item.key)

    async def unfence(self, tenant: str) -> bool:
        """Back from "shredding" to "active": the shred was refused or cancelled. Returns
        whether this call ended a fence."""
        while True:
            item = await self._meta.get(tenant_key(tenant))
            if item is None:
                return False
            t = Tenant.decode(item.value)
            if t.state != SHREDDING:
                return False
            t.state = "active"
            if await self._meta.txn(Txn(compares={item.key: item.revision},
                                        puts={item.key: t.encode()})):
                self._reads.forget(item.key)
                return True

    async def shred(self, tenant: str, compares: dict[bytes, int] | None = None,
                    fenced: int | None = None) -> bool:
        """Destroy every KEK of the tenant and revoke its access keys. With `compares` (a
        scheduled shred's record and the revision it was read at), only if those records
        are unchanged, in the same transaction: else StaleRecord (the shred was cancelled).
        With `fenced` (the revision `fence` returned), only if the tenant record is still
        at it: else False (it changed, maybe unfenced meanwhile: fence and scan again)."""
        while True:
            item = await self._meta.get(tenant_key(tenant))
            if item is None:
                raise NotFound(f"tenant {tenant!r} does not exist")
            if fenced is not None and item.revision != fenced:
                return False
            t = Tenant.decode(item.value)
            t.keks = {}
            t.state = SHREDDED
            if await self._meta.txn(Txn(compares={**(compares or {}), item.key: item.revision},
                                        puts={item.key: t.encode()})):
                break
            for k, rev in (compares or {}).items():
                cur = await self._meta.get(k)
                if (cur.revision if cur else 0) != rev:
                    raise StaleRecord(f"the shred of tenant {tenant!r} was cancelled")
        self._forget_keks(tenant)
        self._state_cache.pop(tenant, None)
        self._reads.forget(item.key)
        for ak in await self.list_keys(tenant):
            await self.revoke_key(ak.access_key)
        return True

    # access keys (their records: `storage/access_keys.py`) -------------------------------

    async def credential(self, access_key: str) -> Credential | None:
        """The active credential for an access key id, or None: cached while the store's
        auth change stamp holds (one shared counter read on SQLite; on etcd, from memory
        while a confirmed watch stands, `etcd_stamp.py`), so a key revoked through any
        gateway or worker is refused by the next request in every process on SQLite and
        within `etcd_stamp.MAX_AGE_S` (usually the next request) on etcd. A tenant key
        whose tenant is marked "deleting" (or has no record) is None too: the mark is a
        tenant record write, which moves the stamp, so its keys stop at once, not at the
        revoke step (which a cut-short delete never reaches)."""
        now, stamp = time.monotonic(), await self._stamp()
        hit = self._secret_cache.get(access_key)
        if _holds(hit, now, stamp):
            return hit[2]
        began, item = await self._read(access_key_key(access_key), stamp)
        cred = None
        if item is not None:
            rec = AccessKey.decode(item.value)
            if rec.state == "active":
                sk = aead.unwrap(self._secret_kek, rec.secret, self._secret_aad(access_key))
                cred = Credential(access_key, sk.decode(), rec.tenant, rec.role)
        if cred is not None and cred.role == "tenant":
            _, _, state, titem = await self._cached(cred.tenant)
            if state in (None, DELETING) or titem is None or not same_incarnation(
                    rec, Tenant.decode(titem.value)):  # (made for a deleted namesake)
                cred = None
        self._secret_cache[access_key] = (began + SHORT_TTL_S, stamp, cred)
        return cred
