"""Access key records: issuing, listing and revoking a tenant's (or an operator's) keys, and
the key that wraps their secrets.

A mixin of `TenantService` (`storage/tenants.py`), apart from it because the records are
their own concept: a secret is stored wrapped by a key the root key wraps (it must be
recoverable to verify SigV4), and a tenant key is bound to its tenant record's incarnation.
Looking a key up for a request (`TenantService.credential`, cached under the auth change
stamp) stays with the tenant caches it shares.
"""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import dataclass

from storage.crypto import aead, keys, labels
from storage.errors import Conflict, NotFound
from storage.keyspace import ACCESS_KEY, access_key_key, space, system_key, tenant_key
from storage.metadata import MetadataStore, Txn
from storage.records import AccessKey, Tenant, same_incarnation
from storage.sharedreads import SharedReads
from storage.tenant_state import compare_of

_AK_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Credential:
    access_key: str
    secret_key: str
    tenant: str
    role: str


class AccessKeys:
    """Access key records of a `TenantService` (which holds the state used here)."""

    _meta: MetadataStore
    _root: keys.RootKeyProvider
    _reads: SharedReads
    _sk: bytes | None
    _secret_cache: dict[str, tuple[float, int, Credential | None]]

    async def create_key(self, tenant: str, role: str = "tenant",
                         access_key: str | None = None, secret_key: str | None = None,
                         ) -> Credential:
        ak = access_key or ("TK" + "".join(secrets.choice(_AK_ALPHABET) for _ in range(18)))
        sk = secret_key or secrets.token_urlsafe(30)[:40]
        wrapped = aead.wrap(self._secret_kek, sk.encode(), self._secret_aad(ak))
        rec = AccessKey(access_key=ak, tenant=tenant, secret=wrapped, created=time.time(),
                        role=role)
        akey = access_key_key(ak)
        for _ in range(8):
            compares = {akey: 0}
            if role == "tenant":  # the tenant record compared, as KMS key creation does: a
                # `tenant delete` marks it before it revokes the keys it lists, so a key
                # made meanwhile fails here instead of outliving the tenant; the key is
                # that record's (its incarnation), not the name's
                titem = await self._meta.get(tenant_key(tenant))
                compares.update(compare_of(tenant, titem))
                assert titem is not None
                rec.incarnation = Tenant.decode(titem.value).incarnation
            if await self._meta.txn(Txn(compares=compares, puts={akey: rec.encode()})):
                return Credential(ak, sk, tenant, role)
            if await self._meta.get(akey) is not None:
                raise Conflict(f"access key {ak} already exists")
        raise Conflict(f"tenant {tenant!r} kept changing while the key was made; nothing was "
                       "made: try again")

    @property
    def _secret_kek(self) -> bytes:
        """Key that wraps access secrets (they must be recoverable to verify SigV4)."""
        if self._sk is None:
            raise RuntimeError("TenantService.load() was not called")
        return self._sk

    async def load(self) -> None:
        """Load (or create) the key that wraps access secrets."""
        k = system_key("access-secret-kek")
        aad = keys.pack_fields(labels.ROOT_WRAPS_SECRET_V1, [])
        item = await self._meta.get(k)
        if item is None:
            wrapped = self._root.wrap(aead.random_key(), aad)
            await self._meta.txn(Txn(compares={k: 0}, puts={k: wrapped}))
            item = await self._meta.get(k)
        assert item is not None
        self._sk = self._root.unwrap(item.value, aad)

    @staticmethod
    def _secret_aad(ak: str) -> bytes:
        return keys.pack_fields(labels.ROOT_WRAPS_SECRET_V1, [ak])
    async def list_keys(self, tenant: str | None = None) -> list[AccessKey]:
        """Every access key, or those of `tenant`: a tenant key is its record's (made for
        its incarnation), so a tenant made again under a deleted one's name (`reuse`) does
        not list the deleted one's revoked keys as its own."""
        items = await self._meta.range(*space(ACCESS_KEY), limit=100000)
        recs = [AccessKey.decode(i.value) for i in items]
        if tenant is None:
            return recs
        titem = await self._meta.get(tenant_key(tenant))
        t = Tenant.decode(titem.value) if titem is not None else None
        return [r for r in recs if r.tenant == tenant and (
            r.role != "tenant" or (t is not None and same_incarnation(r, t)))]

    async def key_issued(self, access_key: str) -> bool:
        """Whether `access_key` names a key issued here, active or revoked (one record read)."""
        return await self._meta.get(access_key_key(access_key)) is not None

    async def revoke_key(self, access_key: str) -> None:
        item = await self._meta.get(access_key_key(access_key))
        if item is None:
            raise NotFound(f"access key {access_key} does not exist")
        rec = AccessKey.decode(item.value)
        rec.state = "revoked"
        await self._meta.put(item.key, rec.encode())
        self._secret_cache.pop(access_key, None)
        self._reads.forget(item.key)
