"""Named KMS keys per tenant (SSE-KMS), as AWS KMS names them: key ids, ARNs and aliases.

A KMS key is 32 bytes of key material stored wrapped by its tenant's KEK (so shredding the
tenant destroys every KMS key, and with them the data keys they wrap). An SSE-KMS object's
data key is wrapped by its KMS key (or by the S3 Bucket Key derived from it) and then, like
every data key, by the tenant KEK; the version's `sse` record names the key (`kms_key`).

Names a client may use, all looked up in the requesting tenant's keys only:

    1234abcd-12ab-34cd-56ef-1234567890ab                        key id (a UUID)
    arn:aws:kms:<region>:<tenant>:key/<key id>                  key ARN (the tenant is the account)
    alias/<name>                                                alias name
    arn:aws:kms:<region>:<tenant>:alias/<name>                  alias ARN

Anything else is `Invalid keyId ...`; a well-formed name that names no key of the tenant is
`Key '<arn>' does not exist` or `Alias <arn> is not found.` (AWS KMS's NotFoundException
messages); an ARN of another account is refused (`KmsAccessDenied`: no cross-tenant grants).
The tenant's default key (`aws:kms` without a key id, as AWS's managed key) has the alias
`alias/aws/s3` and is made on first use.

Key states, as AWS KMS: `Enabled`; `Disabled` (DisableKey; EnableKey undoes it);
`PendingDeletion` (ScheduleKeyDeletion, a waiting period of 7 to 30 days; CancelKeyDeletion
leaves it Disabled). A key that is not Enabled neither wraps nor unwraps data keys: writes and
reads of its objects fail with KMS's DisabledException or KMSInvalidStateException
(`KmsDisabled`, `KmsInvalidState`); once the waiting period is over the key is deleted (its
record and aliases: `purge_due`, run by the key worker) and its objects are unreadable for
good (NotFoundException). The state is read from the metadata store on every use, so a
change takes effect on every gateway at once; only the unwrapped material and alias lookups
are cached.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from storage import jsondoc, tenant_delete
from storage.crypto import keys
from storage.errors import Conflict, InvalidInput, NotFound, StorageError, TenantDeleting
from storage.keyspace import (
    KMS_ALIAS,
    KMS_KEY,
    kms_alias_key,
    kms_alias_prefix,
    kms_key_key,
    kms_key_prefix,
    space,
    span,
    tenant_key,
)
from storage.keyspace import unpack as unpack_key
from storage.metadata import Item, MetadataStore, Txn
from storage.object_lock import LockNow
from storage.records import Record, Tenant, pack, unpack
from storage.tenant_state import DELETING, deleting_message
from storage.tenants import TenantService

DEFAULT_ALIAS = "aws/s3"
DEFAULT_DESCRIPTION = "Default key that protects my S3 objects when no other key is defined"
CACHE_TTL_S = 60.0
ENABLED, DISABLED, PENDING_DELETION = "Enabled", "Disabled", "PendingDeletion"
WINDOW_DAYS = (7, 30)  # ScheduleKeyDeletion's PendingWindowInDays, as AWS KMS (default 30)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ALIAS_NAME = re.compile(r"[A-Za-z0-9/_-]{1,250}")
_ARN = re.compile(r"arn:aws:kms:([a-z0-9-]{1,32}):([A-Za-z0-9_$.-]{1,128}):(key|alias)/(.+)")


def _check_not_deleted(tenant: str, trec: Item | None) -> Item:
    """The tenant record a key may be made under; NotFound once the tenant is gone,
    TenantDeleting (S3 AccessDenied, as an SSE-S3 write gets) while it is being deleted
    (`storage.tenant_delete`)."""
    if trec is None:
        raise NotFound(f"tenant {tenant!r} does not exist; no key was made")
    if Tenant.decode(trec.value).state == DELETING:
        raise TenantDeleting(f"{deleting_message(tenant)}; no key was made")
    return trec


def canonical_context(encoded: str) -> str:
    """An S3 encryption context (base64 of a JSON object of strings) as canonical JSON, the
    form bound into the data key's wrapping; InvalidInput if it is not one."""
    try:
        doc = jsondoc.loads(base64.b64decode(encoded, validate=True).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        doc = None
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise InvalidInput("the encryption context must be base64-encoded JSON of string "
                           "key-value pairs")
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class KmsNotFound(NotFound):
    """A key name that is malformed or names no key of the tenant (S3: 400
    KMS.NotFoundException with this message)."""


class KmsDisabled(StorageError):
    """A Disabled key (S3: 400 KMS.DisabledException with this message)."""


class KmsInvalidState(StorageError):
    """A key pending deletion, or a state change the key's state does not allow (S3: 400
    KMS.KMSInvalidStateException with this message)."""


class KmsAccessDenied(StorageError):
    """A key ARN of another account (tenant): not usable, whether it exists or not."""


@dataclass(frozen=True)
class KeyRef:
    """A parsed key name: a key id or an alias name (without `alias/`), and the region and
    account an ARN gave (None for the short forms)."""

    kind: str  # "key" | "alias"
    name: str
    region: str | None = None
    account: str | None = None


def parse_key_ref(ref: str) -> KeyRef:
    """Parse any name a client may give for a KMS key; KmsNotFound("Invalid keyId ...")."""
    m = _ARN.fullmatch(ref)
    if m is not None:
        region, account, kind, name = m.groups()
        if (kind == "key" and _UUID.fullmatch(name)) or (
                kind == "alias" and _ALIAS_NAME.fullmatch(name)):
            return KeyRef(kind, name, region, account)
    elif ref.startswith("alias/") and _ALIAS_NAME.fullmatch(ref[6:]):
        return KeyRef("alias", ref[6:])
    elif _UUID.fullmatch(ref):
        return KeyRef("key", ref)
    raise KmsNotFound(f"Invalid keyId {ref}")


def alias_name(alias: str) -> str:
    """An alias as the CLI or API gives it (`alias/x` or `x`) -> `x`; InvalidInput if bad."""
    name = alias[6:] if alias.startswith("alias/") else alias
    if not _ALIAS_NAME.fullmatch(name):
        raise InvalidInput(f"invalid alias {alias!r}: 1-250 letters, digits, '/', '_' or '-'")
    return name


def key_arn(region: str, tenant: str, key_id: str) -> str:
    return f"arn:aws:kms:{region}:{tenant}:key/{key_id}"


def alias_arn(region: str, tenant: str, name: str) -> str:
    return f"arn:aws:kms:{region}:{tenant}:alias/{name}"


@dataclass
class KmsKey(Record):
    tenant: str
    key_id: str
    created: float
    material: bytes  # 32 random bytes wrapped by the tenant KEK version `kek_version`
    kek_version: int
    aliases: list[str] = field(default_factory=list)  # names without `alias/`
    description: str = ""
    managed: bool = False  # the tenant's default key (alias aws/s3), made on first use
    state: str = ENABLED  # ENABLED | DISABLED | PENDING_DELETION
    deletion_date: float = 0.0  # PendingDeletion: when the key is deleted (epoch seconds)

    def deleted(self, now: float) -> bool:
        """Past its deletion date: as good as gone, whether or not purged yet."""
        return self.state == PENDING_DELETION and self.deletion_date <= now


class KmsService:
    """Create, list and resolve a tenant's KMS keys; hand out their (unwrapped) material."""

    def __init__(self, meta: MetadataStore, tenants: TenantService, region: str) -> None:
        self._meta = meta
        self._tenants = tenants
        self.region = region
        self._material: dict[tuple[str, str], tuple[float, bytes]] = {}
        self._aliases: dict[tuple[str, str], tuple[float, str]] = {}

    def arn(self, k: KmsKey) -> str:
        return key_arn(self.region, k.tenant, k.key_id)

    async def create(self, tenant: str, aliases: list[str] | tuple[str, ...] = (),
                     key_id: str | None = None, description: str = "",
                     managed: bool = False) -> KmsKey:
        """A new key of an active tenant, with its aliases (each unique in the tenant)."""
        names = [alias_name(a) for a in aliases]
        if len(set(names)) != len(names):
            raise InvalidInput("an alias is given twice")
        if not managed and any(n == "aws" or n.startswith("aws/") for n in names):
            raise InvalidInput("aliases beginning with alias/aws/ are reserved for the "
                               "default key")
        if key_id is None:
            key_id = str(uuid.uuid4())
        elif not _UUID.fullmatch(key_id):
            raise InvalidInput(f"invalid key id {key_id!r}: a lowercase UUID such as "
                               "1234abcd-12ab-34cd-56ef-1234567890ab")
        kek_version, kek = await self._tenants.kek(tenant)
        k = KmsKey(tenant=tenant, key_id=key_id, created=time.time(),
                   material=keys.new_kms_key(kek, tenant, key_id, kek_version),
                   kek_version=kek_version, aliases=names, description=description,
                   managed=managed)
        kk = kms_key_key(tenant, key_id)
        ref = {"key_id": key_id}
        puts = {kk: k.encode(), **{kms_alias_key(tenant, n): pack(ref) for n in names}}
        # the tenant record compared, not written (parallel creates do not race on it, and
        # the auth caches stay): a `delete_tenant` marks it "deleting" before it lists the
        # keys, so a create either lands before the mark or fails and sees the mark
        tk = tenant_key(tenant)
        for _ in range(8):
            trec = _check_not_deleted(tenant, await self._meta.get(tk))
            if await self._meta.txn(Txn(compares={**{key: 0 for key in puts},
                                                  tk: trec.revision}, puts=puts)):
                return k
            again = await self._meta.get(tk)
            if again is None or again.revision == trec.revision:
                break  # deleted meanwhile, or a key/alias compare failed
        else:
            raise Conflict(f"tenant {tenant!r} kept changing while the key was made; nothing "
                           "was made: try again")
        _check_not_deleted(tenant, await self._meta.get(tk))
        if await self._meta.get(kk) is not None:
            raise Conflict(f"KMS key {key_id} already exists")
        taken = [n for n in names if await self._meta.get(kms_alias_key(tenant, n))]
        raise Conflict(f"alias alias/{taken[0] if taken else names[0]} already exists")

    async def list(self, tenant: str) -> list[KmsKey]:
        items = await self._meta.range(*span(kms_key_prefix(tenant)), limit=100000)
        now = time.time()
        return sorted((k for k in (KmsKey.decode(i.value) for i in items) if not k.deleted(now)),
                      key=lambda k: k.created)

    async def get(self, tenant: str, key_id: str) -> KmsKey | None:
        """A key (None if there is none, or it is past its deletion date)."""
        item = await self._meta.get(kms_key_key(tenant, key_id))
        k = None if item is None else KmsKey.decode(item.value)
        return None if k is None or k.deleted(time.time()) else k

    async def default_key(self, tenant: str) -> KmsKey:
        """The tenant's default key (alias aws/s3), made on its first use by any gateway."""
        k = await self._by_alias(tenant, DEFAULT_ALIAS)
        if k is not None:
            return k
        try:
            return await self.create(tenant, [DEFAULT_ALIAS], description=DEFAULT_DESCRIPTION,
                                     managed=True)
        except Conflict:  # another gateway made it first
            k = await self._by_alias(tenant, DEFAULT_ALIAS)
            if k is None:
                raise
            return k

    async def resolve(self, tenant: str, ref: str | None, for_use: bool = True) -> KmsKey:
        """The key a request names (None: the default key), in `tenant`'s keys only; with
        `for_use` (an SSE-KMS write) refused unless it is Enabled."""
        k = await self._resolve(tenant, ref)
        if for_use:
            self.check_usable(k)
        return k

    async def _resolve(self, tenant: str, ref: str | None) -> KmsKey:
        if ref is None:
            return await self.default_key(tenant)
        r = parse_key_ref(ref)
        if r.account is not None and r.account != tenant:
            raise KmsAccessDenied(f"the key {ref} belongs to another account")
        if r.kind == "key":
            k = None if r.region not in (None, self.region) else await self.get(tenant, r.name)
            if k is None:
                arn = key_arn(r.region or self.region, r.account or tenant, r.name)
                raise KmsNotFound(f"Key '{arn}' does not exist")
            return k
        k = None if r.region not in (None, self.region) else await self._by_alias(tenant,
                                                                                   r.name)
        if k is None:
            raise KmsNotFound(f"Alias {alias_arn(r.region or self.region, tenant, r.name)} "
                              "is not found.")
        return k

    async def _by_alias(self, tenant: str, name: str) -> KmsKey | None:
        now = time.monotonic()
        hit = self._aliases.get((tenant, name))
        if hit and hit[0] > now:
            return await self.get(tenant, hit[1])
        item = await self._meta.get(kms_alias_key(tenant, name))
        if item is None:
            return None
        key_id = str(unpack(item.value)["key_id"])
        self._aliases[(tenant, name)] = (now + 5.0, key_id)
        return await self.get(tenant, key_id)

    async def material(self, tenant: str, key_id: str) -> bytes:
        """A key's material, unwrapped with the tenant KEK (KeyUnavailable once shredded);
        KmsNotFound once deleted, KmsDisabled / KmsInvalidState unless it is Enabled (the
        record is read every time: a state change holds at once on every gateway)."""
        k = await self.get(tenant, key_id)
        if k is None:
            raise KmsNotFound(f"Key '{key_arn(self.region, tenant, key_id)}' does not exist")
        self.check_usable(k)
        now = time.monotonic()
        hit = self._material.get((tenant, key_id))
        if hit and hit[0] > now:
            return hit[1]
        _, kek = await self._tenants.kek(tenant, k.kek_version)
        raw = keys.open_kms_key(kek, tenant, key_id, k.kek_version, k.material)
        self._material[(tenant, key_id)] = (now + CACHE_TTL_S, raw)
        return raw

    def check_usable(self, k: KmsKey) -> None:
        """Refuse a key that may not wrap or unwrap data keys now, with AWS KMS's messages."""
        if k.state == DISABLED:
            raise KmsDisabled(f"{self.arn(k)} is disabled.")
        if k.state == PENDING_DELETION:
            raise KmsInvalidState(f"{self.arn(k)} is pending deletion.")

    # lifecycle -----------------------------------------------------------------------------

    async def _change(self, tenant: str, ref: str, fn: Callable[[KmsKey], None]) -> KmsKey:
        """Apply `fn` to the key `ref` names (compare-and-swap, retried if it raced)."""
        while True:
            k = await self.resolve(tenant, ref, for_use=False)
            if k.managed:
                raise InvalidInput("the default key alias/aws/s3 is managed by the service: "
                                   "it cannot be disabled or deleted")
            kk = kms_key_key(tenant, k.key_id)
            item = await self._meta.get(kk)
            if item is None:
                continue
            k = KmsKey.decode(item.value)
            fn(k)
            if await self._meta.txn(Txn(compares={kk: item.revision}, puts={kk: k.encode()})):
                return k

    async def set_enabled(self, tenant: str, ref: str, enabled: bool) -> KmsKey:
        """EnableKey / DisableKey; KmsInvalidState for a key pending deletion."""
        def fn(k: KmsKey) -> None:
            if k.state == PENDING_DELETION:
                raise KmsInvalidState(f"{self.arn(k)} is pending deletion.")
            k.state = ENABLED if enabled else DISABLED
        return await self._change(tenant, ref, fn)

    async def schedule_deletion(self, tenant: str, ref: str, wait_s: float) -> KmsKey:
        """ScheduleKeyDeletion: PendingDeletion until now + wait_s, then deleted (wait 0:
        deleted now). KmsInvalidState if it is already pending deletion."""
        def fn(k: KmsKey) -> None:
            if k.state == PENDING_DELETION:
                raise KmsInvalidState(f"{self.arn(k)} is pending deletion.")
            k.state, k.deletion_date = PENDING_DELETION, time.time() + max(0.0, wait_s)
        k = await self._change(tenant, ref, fn)
        if wait_s <= 0:
            await purge_due(self._meta, tenant)
        return k

    async def cancel_deletion(self, tenant: str, ref: str) -> KmsKey:
        """CancelKeyDeletion: a key pending deletion becomes Disabled, as in AWS KMS."""
        def fn(k: KmsKey) -> None:
            if k.state != PENDING_DELETION:
                raise KmsInvalidState(f"{self.arn(k)} is not pending deletion "
                                      f"(it is {k.state}).")
            k.state, k.deletion_date = DISABLED, 0.0
        return await self._change(tenant, ref, fn)

    async def delete_tenant(self, tenant: str, expect: set[str] | None,
                            first: Callable[[], Awaitable[None]] | None,
                            lock_now: LockNow) -> int:
        """Delete the tenant with every KMS key and alias of it (`tenant_delete`); with
        `expect`, Conflict unless its keys are exactly those; `first` (the access keys'
        revocation) runs once the keys are settled; TenantLocked while its keys seal a
        locked version (`lock_now`: the lock clock). Returns how many keys went."""
        n = await tenant_delete.delete(self._meta, tenant, expect, first, lock_now)
        self._material = {k: v for k, v in self._material.items() if k[0] != tenant}
        self._aliases = {k: v for k, v in self._aliases.items() if k[0] != tenant}
        return n

    async def wrapping_key(self, tenant: str, key_id: str, bucket: str | None) -> bytes:
        """What wraps a data key: the KMS key, or with S3 Bucket Keys the bucket's key."""
        raw = await self.material(tenant, key_id)
        return raw if bucket is None else keys.bucket_key(raw, tenant, key_id, bucket)



async def purge_due(meta: MetadataStore, tenant: str | None = None) -> int:
    """Delete the keys (records and aliases) of `tenant` (None: every tenant) whose deletion
    date has passed; the count deleted. Their objects stay unreadable for good."""
    now = time.time()
    rng = span(kms_key_prefix(tenant)) if tenant is not None else space(KMS_KEY)
    due = [(i, k) for i, k in ((i, KmsKey.decode(i.value))
                               for i in await meta.range(*rng, limit=100000)) if k.deleted(now)]
    if not due:
        return 0
    arng = span(kms_alias_prefix(tenant)) if tenant is not None else space(KMS_ALIAS)
    target = {a.key: (unpack_key(a.key)[1], str(unpack(a.value)["key_id"]))
              for a in await meta.range(*arng, limit=100000)}
    done = 0
    for i, k in due:
        aliases = tuple(a for a, t in target.items() if t == (k.tenant, k.key_id))
        if await meta.txn(Txn(compares={i.key: i.revision}, deletes=(i.key, *aliases))):
            done += 1
    return done


async def rewrap_keys(meta: MetadataStore, tenants: TenantService, tenant: str) -> int:
    """After a KEK rotation: rewrap every KMS key of the tenant under the current KEK version
    (compare-and-swap per key; the material itself never changes). The count rewrapped."""
    done = 0
    for item in await meta.range(*span(kms_key_prefix(tenant)), limit=100000):
        while item is not None:
            k = KmsKey.decode(item.value)
            current, new = await tenants.kek(tenant)
            if k.kek_version == current:
                break
            _, old = await tenants.kek(tenant, k.kek_version)
            raw = keys.open_kms_key(old, tenant, k.key_id, k.kek_version, k.material)
            k.material = keys.seal_kms_key(new, tenant, k.key_id, current, raw)
            k.kek_version = current
            if await meta.txn(Txn(compares={item.key: item.revision},
                                  puts={item.key: k.encode()})):
                done += 1
                break
            item = await meta.get(item.key)
    return done
