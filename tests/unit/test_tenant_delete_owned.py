"""mend20h: no bucket or volume outlives a tenant delete (storage/tenant_delete.py). Bucket
and volume creates compare the tenant record (`tenants.tenant_compare`); the delete re-checks
for them after its mark and undoes the mark if it finds one. Each test FAILS on main."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.s3.errors_map import to_s3_error
from storage import tenant_delete
from storage.buckets import BucketService
from storage.config import config_from_mapping
from storage.crypto.keys import FileRootKey
from storage.errors import StorageError, TenantDeleting, TenantNotEmpty
from storage.keyspace import tenant_key, volume_key
from storage.metadata import Txn
from storage.metadata.sqlite import SqliteStore
from storage.records import Tenant
from storage.tenants import TenantService
from storage.volumes import VolumeService


async def _setup(tmp_path: Path) -> tuple[SqliteStore, TenantService]:
    meta = await SqliteStore.open(tmp_path / "m.db")
    tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await tenants.load()
    await tenants.create("acme")
    return meta, tenants


def _volumes(tmp_path: Path, meta: SqliteStore, tenants: TenantService) -> VolumeService:
    nodes = [{"id": f"n{z * 2 + i}", "zone": f"az{z}", "address": f"127.0.{z + 1}.{i + 1}:1"}
             for z in range(3) for i in range(2)]
    cfg = config_from_mapping({"data_dir": str(tmp_path), "cluster": {"segment_size": 65536},
                               "profiles": {"standard": {"k": 4, "m": 2}}, "nodes": nodes},
                              tmp_path)
    return VolumeService(cfg, meta, tenants, None)  # type: ignore[arg-type]  # records only


def _delete_before_txn(meta: SqliteStore) -> None:
    """The next transaction (a create's) waits while another gateway's whole tenant delete
    runs: the create read the tenant "active" and commits after the delete."""
    plain: Callable[[Txn], Awaitable[bool]] = meta.txn
    armed = [True]

    async def txn(t: Txn) -> bool:
        if armed[0]:
            armed[0] = False
            await tenant_delete.delete(meta, "acme", None, None)
        return await plain(t)
    meta.txn = txn  # type: ignore[method-assign]


async def test_a_bucket_create_racing_the_delete_fails_its_compare(tmp_path: Path) -> None:
    meta, _ = await _setup(tmp_path)
    buckets = BucketService(meta, "us-east-1")
    try:
        _delete_before_txn(meta)
        with pytest.raises(StorageError) as err:
            await buckets.create("acme", "late-bucket")
        assert to_s3_error(err.value, "late-bucket", None).code == "AccessDenied"
        assert await meta.get(tenant_key("acme")) is None
        assert await buckets.list("acme") == []
    finally:
        await meta.close()


async def test_a_volume_create_racing_the_delete_fails_its_compare(tmp_path: Path) -> None:
    meta, tenants = await _setup(tmp_path)
    vols = _volumes(tmp_path, meta, tenants)
    try:
        _delete_before_txn(meta)
        with pytest.raises(StorageError):
            await vols.create("acme", "late-volume", 1 << 20)
        assert await meta.get(volume_key("acme", "late-volume")) is None
    finally:
        await meta.close()


async def test_a_bucket_made_before_the_mark_undoes_the_delete(tmp_path: Path) -> None:
    """Made after the admin's "no buckets" check, before the mark: the delete refuses,
    names what to delete first, and leaves the tenant active (it can delete the bucket)."""
    meta, tenants = await _setup(tmp_path)
    buckets = BucketService(meta, "us-east-1")
    try:
        await buckets.create("acme", "early-bucket")
        with pytest.raises(TenantNotEmpty, match="still owns buckets.*delete its buckets"):
            await tenant_delete.delete(meta, "acme", None, None)
        item = await meta.get(tenant_key("acme"))
        assert item is not None and Tenant.decode(item.value).state == "active"
        await tenants.create_key("acme")  # usable again
    finally:
        await meta.close()


async def test_a_volume_made_before_the_mark_undoes_the_delete(tmp_path: Path) -> None:
    meta, tenants = await _setup(tmp_path)
    vols = _volumes(tmp_path, meta, tenants)
    try:
        await vols.create("acme", "v", 1 << 20)
        with pytest.raises(TenantNotEmpty, match="still owns volumes"):
            await tenant_delete.delete(meta, "acme", None, None)
        item = await meta.get(tenant_key("acme"))
        assert item is not None and Tenant.decode(item.value).state == "active"
    finally:
        await meta.close()


async def test_a_deleting_tenant_makes_nothing_and_says_why(tmp_path: Path) -> None:
    """A delete cut short after its mark: creates say the tenant is being deleted and how
    to finish (S3 AccessDenied, admin 409 TenantDeleting), not "not found" / "destroyed"."""
    meta, tenants = await _setup(tmp_path)
    buckets = BucketService(meta, "us-east-1")

    async def crash() -> None:
        raise ConnectionError("killed before the revocation")
    try:
        with pytest.raises(ConnectionError):
            await tenant_delete.delete(meta, "acme", None, crash)
        for make in (lambda: buckets.create("acme", "b"), lambda: tenants.create_key("acme"),
                     lambda: _volumes(tmp_path, meta, tenants).create("acme", "v", 1 << 20)):
            with pytest.raises(TenantDeleting, match="run `tessera tenant delete acme` again"):
                await make()
        item = await meta.get(tenant_key("acme"))
        with pytest.raises(TenantDeleting):  # what a write's commit asks (auth of writes)
            tenants.revalidate("acme", None, item)
        await tenant_delete.delete(meta, "acme", None, None)  # the re-run finishes it
        assert await meta.get(tenant_key("acme")) is None
    finally:
        await meta.close()


async def test_an_edit_of_the_tenant_does_not_fail_a_create(tmp_path: Path) -> None:
    """The tenant record moving under a create (an identity edit) is retried, not taken
    for "bucket exists"."""
    meta, tenants = await _setup(tmp_path)
    buckets = BucketService(meta, "us-east-1")
    plain, armed = meta.txn, [True]

    async def txn(t: Txn) -> bool:
        if armed[0]:
            armed[0] = False
            await tenants.set_identity("acme", display_name="Acme Corp")
        return await plain(t)
    try:
        meta.txn = txn  # type: ignore[method-assign]
        await buckets.create("acme", "b")
        assert await buckets.list("acme")
    finally:
        await meta.close()
