"""`tessera tenant delete` (storage.tenant_delete): the tenant record is marked "deleting"
first, so no KMS key is made from then on and none is ever left under a deleted tenant;
then its keys and aliases go in pages that fit etcd's default --max-txn-ops (128), the
record last, and a delete cut short is finished by running it again. A key creation only
compares the tenant record, so parallel creates do not race on it (review20b M1, M2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage import tenant_delete
from storage.crypto.keys import FileRootKey
from storage.errors import Conflict, NotFound, TenantDeleting
from storage.keyspace import kms_alias_prefix, kms_key_prefix, span, tenant_key
from storage.kms import KmsService
from storage.metadata import Txn
from storage.metadata.sqlite import SqliteStore
from storage.records import Tenant
from storage.tenants import TenantService
from tests.inproc import no_locks


async def _two_gateways(tmp_path: Path) -> tuple[KmsService, KmsService, SqliteStore]:
    meta = await SqliteStore.open(tmp_path / "meta.db")
    tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await tenants.load()
    await tenants.create("acme")
    other = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await other.load()
    return (KmsService(meta, tenants, "us-east-1"), KmsService(meta, other, "us-east-1"),
            meta)


async def _left(meta: SqliteStore, prefix: bytes) -> int:
    return len(await meta.range(*span(prefix), limit=1000))


async def _state(meta: SqliteStore) -> str | None:
    item = await meta.get(tenant_key("acme"))
    return None if item is None else Tenant.decode(item.value).state


async def test_no_key_is_made_once_the_delete_began(tmp_path: Path) -> None:
    svc, other, meta = await _two_gateways(tmp_path)
    refused: list[Exception] = []

    async def meanwhile() -> None:  # another gateway, while the access keys are revoked
        try:
            await other.create("acme", ["late"])
        except TenantDeleting as exc:
            refused.append(exc)
    try:
        await svc.create("acme", ["early"])
        assert await svc.delete_tenant("acme", None, meanwhile, no_locks) == 1
        assert refused and "is being deleted" in str(refused[0])
        assert await meta.get(tenant_key("acme")) is None
        assert await _left(meta, kms_key_prefix("acme")) == 0
        assert await _left(meta, kms_alias_prefix("acme")) == 0
        with pytest.raises(NotFound):
            await other.create("acme")  # no key for a tenant that is gone
    finally:
        await meta.close()


async def test_a_key_made_after_the_confirmation_refuses_the_delete(tmp_path: Path) -> None:
    svc, other, meta = await _two_gateways(tmp_path)
    try:
        k = await svc.create("acme")
        await other.create("acme")  # after the operator listed (and confirmed) the keys
        with pytest.raises(Conflict, match="nothing was deleted"):
            await svc.delete_tenant("acme", {k.key_id}, None, no_locks)
        assert await _state(meta) == "active"  # the mark was undone
        assert await _left(meta, kms_key_prefix("acme")) == 2
        await other.create("acme")  # keys can be made again
    finally:
        await meta.close()


async def test_parallel_creates_all_succeed_and_leave_the_tenant_record(tmp_path: Path) -> None:
    svc, other, meta = await _two_gateways(tmp_path)
    try:
        before = await meta.get(tenant_key("acme"))
        made = await asyncio.gather(*(s.create("acme", [f"k{i}"])
                                      for i, s in enumerate([svc, other] * 10)),
                                    return_exceptions=True)
        assert [m for m in made if isinstance(m, Exception)] == []
        assert await _left(meta, kms_key_prefix("acme")) == 20
        after = await meta.get(tenant_key("acme"))
        assert before is not None and after is not None and after.revision == before.revision
    finally:
        await meta.close()


async def test_many_keys_go_in_pages_and_a_cut_delete_is_finished(tmp_path: Path) -> None:
    svc, other, meta = await _two_gateways(tmp_path)
    sizes: list[int] = []
    txn = meta.txn
    fail_at = [2]  # the second page fails as a crash would (after the revocation)

    async def counting(t: Txn) -> bool:
        if t.deletes:
            sizes.append(len(t.deletes) + len(t.puts) + len(t.compares))
            fail_at[0] -= 1
            if fail_at[0] == 0:
                raise ConnectionError("the store went away")
        return await txn(t)
    revoked: list[bool] = []

    async def revoke() -> None:
        revoked.append(True)
    try:
        for i in range(130):  # 260 records: past 128 ops
            await svc.create("acme", [f"a{i}"])
        meta.txn = counting  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            await svc.delete_tenant("acme", None, revoke, no_locks)
        assert revoked and await _state(meta) == "deleting"
        with pytest.raises(TenantDeleting, match="is being deleted"):
            await other.create("acme")
        assert await svc.delete_tenant("acme", None, revoke, no_locks) == 130 - 100  # the rest
        assert await meta.get(tenant_key("acme")) is None
        assert await _left(meta, kms_key_prefix("acme")) == 0
        assert await _left(meta, kms_alias_prefix("acme")) == 0
        assert max(sizes) <= tenant_delete.PAGE + 1 < 128
    finally:
        await meta.close()
