"""`tessera tenant delete` deletes the tenant record and its KMS keys in one transaction
(storage.kms `KmsService.delete_tenant`): a key made by another gateway after the delete
listed the keys is never left under a deleted tenant, never destroyed unconfirmed, and no
key is made for a tenant once it is gone. The other gateway's creation runs at the one
point between the listing and the transaction (the access-key revocation hook), so the
order is fixed."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.crypto.keys import FileRootKey
from storage.errors import Conflict, NotFound
from storage.keyspace import kms_key_prefix, span, tenant_key
from storage.kms import KmsService
from storage.metadata.sqlite import SqliteStore
from storage.tenants import TenantService


async def _two_gateways(tmp_path: Path) -> tuple[KmsService, KmsService, SqliteStore]:
    meta = await SqliteStore.open(tmp_path / "meta.db")
    tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await tenants.load()
    await tenants.create("acme")
    other = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await other.load()
    return (KmsService(meta, tenants, "us-east-1"), KmsService(meta, other, "us-east-1"),
            meta)


async def _keys_left(meta: SqliteStore) -> int:
    return len(await meta.range(*span(kms_key_prefix("acme")), limit=100))


async def test_a_key_made_during_the_delete_goes_with_the_tenant(tmp_path: Path) -> None:
    svc, other, meta = await _two_gateways(tmp_path)
    made = []

    async def meanwhile() -> None:
        made.append(await other.create("acme", ["late"]))
    try:
        await svc.create("acme", ["early"])
        assert await svc.delete_tenant("acme", None, meanwhile) == 2  # (--yes: all of them)
        assert made and await meta.get(tenant_key("acme")) is None
        assert await _keys_left(meta) == 0, "a key was left under the deleted tenant"
        with pytest.raises(NotFound):
            await other.create("acme")  # no key for a tenant that is gone
        assert await _keys_left(meta) == 0
    finally:
        await meta.close()


async def test_a_key_made_after_the_confirmation_refuses_the_delete(tmp_path: Path) -> None:
    svc, other, meta = await _two_gateways(tmp_path)

    async def meanwhile() -> None:
        await other.create("acme")
    try:
        k = await svc.create("acme")
        with pytest.raises(Conflict, match="the tenant and its KMS keys were not deleted"):
            await svc.delete_tenant("acme", {k.key_id}, meanwhile)
        assert await meta.get(tenant_key("acme")) is not None
        assert await _keys_left(meta) == 2  # the confirmed key was not destroyed either
    finally:
        await meta.close()
