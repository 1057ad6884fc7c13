"""review20h: what a tenant in the "deleting" state (storage/tenant_delete.py) still lets
through. Each test FAILS on 085529a1 (see /work/notes/reports20/review20h.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.s3.errors_map import to_s3_error
from storage import tenant_delete
from storage.buckets import BucketService
from storage.crypto.keys import FileRootKey
from storage.errors import StorageError
from storage.keyspace import tenant_key
from storage.kms import KmsService
from storage.metadata.sqlite import SqliteStore
from storage.tenants import TenantService
from tests.inproc import no_locks


async def _setup(tmp_path: Path) -> tuple[SqliteStore, TenantService, KmsService]:
    meta = await SqliteStore.open(tmp_path / "m.db")
    tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await tenants.load()
    await tenants.create("acme")
    return meta, tenants, KmsService(meta, tenants, "us-east-1")


async def test_no_bucket_outlives_the_tenant_delete(tmp_path: Path) -> None:
    """A CreateBucket served (by the tenant's still-live key, another gateway) while the
    delete runs its steps: the bucket must not be left under the deleted tenant's name
    (a same-name tenant made later would own it, with the old tenant's policy)."""
    meta, tenants, kms = await _setup(tmp_path)
    buckets = BucketService(meta, "us-east-1")
    try:
        async def revoke() -> None:  # step 3; meanwhile a CreateBucket elsewhere
            try:
                await buckets.create("acme", "late-bucket")
            except StorageError:
                pass  # refused: what should happen
        try:
            await kms.delete_tenant("acme", None, revoke, no_locks)
        except StorageError:
            pass  # the delete refused (the tenant owns a bucket now): also fine
        gone = await meta.get(tenant_key("acme")) is None
        assert not (gone and await buckets.list("acme")), "a bucket outlived its tenant"
    finally:
        await meta.close()


async def test_kms_put_of_a_deleting_tenant_is_no_internal_error(tmp_path: Path) -> None:
    """A delete cut short after its mark leaves the tenant "deleting" with its access keys
    live; an SSE-KMS PUT needing the default key must get a clear S3 error, not a 500."""
    meta, tenants, kms = await _setup(tmp_path)
    try:
        async def crash() -> None:
            raise ConnectionError("killed before the revocation")
        with pytest.raises(ConnectionError):
            await tenant_delete.delete(meta, "acme", None, crash, no_locks)
        with pytest.raises(StorageError) as err:
            await kms.resolve("acme", None)  # what sse.for_request asks for aws:kms
        assert to_s3_error(err.value, "b", "k").status != 500
    finally:
        await meta.close()


async def test_no_access_key_outlives_the_tenant_delete(tmp_path: Path) -> None:
    """An access key made (gateway B) while the delete runs (gateway A): create_key read
    the tenant active before the mark and its txn lands after the revocation; the key must
    not be live for the deleted tenant's name (nor for a same-name tenant made later)."""
    meta, a, kms = await _setup(tmp_path)
    b = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await b.load()
    try:
        async def revoke() -> None:
            for k in await a.list_keys("acme"):
                if k.state == "active":
                    await a.revoke_key(k.access_key)
        plain_get, armed = meta.get, [True]

        async def get_then_delete(key: bytes):  # type: ignore[no-untyped-def]
            item = await plain_get(key)
            if armed[0] and key == tenant_key("acme"):  # B's create_key read it "active"
                armed[0] = False  # ... then A's whole delete runs before B's txn
                await kms.delete_tenant("acme", None, revoke, no_locks)
            return item
        meta.get = get_then_delete  # type: ignore[method-assign]
        try:
            cred = await b.create_key("acme")
        except StorageError:
            return  # refused: what should happen
        gone = await meta.get(tenant_key("acme")) is None
        assert not (gone and await a.credential(cred.access_key)), \
            "an access key made during the delete is live for a deleted tenant"
    finally:
        await meta.close()
