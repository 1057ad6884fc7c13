"""tenant21: a tenant's access keys stop at its delete's mark ("deleting"), not at the
revoke step a cut-short delete never reaches; in every gateway process at once (the mark
is a tenant record write: it moves the auth change stamp every credential cache keys on)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from storage import tenant_delete
from storage import tenants as tenants_mod
from storage.buckets import BucketService
from storage.crypto.keys import FileRootKey
from storage.errors import Conflict, TenantNotEmpty
from storage.keyspace import bucket_key, tenant_key
from storage.metadata import Item
from storage.metadata.sqlite import SqliteStore
from storage.records import Tenant
from storage.tenants import TenantService
from storage.testing.simnodes import SimNodes
from tests.inproc import no_locks, sim_cluster_s3, sim_config


async def _gateway(tmp_path: Path) -> tuple[SqliteStore, TenantService]:
    """One gateway worker's store and tenant service over the shared database file."""
    meta = await SqliteStore.open(tmp_path / "m.db")
    tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await tenants.load()
    return meta, tenants


async def test_keys_stop_at_the_mark_in_every_worker(tmp_path: Path) -> None:
    """Worker B has the key cached; worker A's delete marks the tenant and dies before the
    revocation: B's next look refuses the key, as does A's."""
    meta_a, a = await _gateway(tmp_path)
    meta_b, b = await _gateway(tmp_path)
    try:
        await a.create("acme")
        cred = await a.create_key("acme")
        assert await b.credential(cred.access_key) == cred  # cached in B

        async def crash() -> None:
            raise ConnectionError("killed before the revocation")
        with pytest.raises(ConnectionError):
            await tenant_delete.delete(meta_a, "acme", None, crash, no_locks)
        assert await b.credential(cred.access_key) is None
        assert await a.credential(cred.access_key) is None
        await tenant_delete.delete(meta_a, "acme", None, None, no_locks)  # run again: finished
        assert await b.credential(cred.access_key) is None
    finally:
        await meta_a.close()
        await meta_b.close()


async def test_keys_come_back_when_the_delete_is_refused(tmp_path: Path) -> None:
    """A delete refused after its mark (the tenant still owns a bucket) undoes the mark:
    the keys authenticate again (they were never revoked)."""
    meta_a, a = await _gateway(tmp_path)
    meta_b, b = await _gateway(tmp_path)
    try:
        await a.create("acme")
        cred = await a.create_key("acme")
        await BucketService(meta_a, "us-east-1").create("acme", "kept")
        assert await b.credential(cred.access_key) == cred
        with pytest.raises(TenantNotEmpty):
            await tenant_delete.delete(meta_a, "acme", None, None, no_locks)
        assert await b.credential(cred.access_key) == cred
    finally:
        await meta_a.close()
        await meta_b.close()


async def test_create_bucket_reads_the_tenant_record_once(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """CreateBucket compares the tenant record its auth check just read (cached), instead
    of reading it again; a create of a name that exists learns so from its failed compare."""
    monkeypatch.setattr(tenants_mod, "SHORT_TTL_S", 3600.0)  # no expiry inside the request
    cfg = sim_config(tmp_path, 0)
    async with sim_cluster_s3(tmp_path, cfg, SimNodes(list(cfg.nodes)), "bkt") as (c, s3):
        plain, reads = c.meta.get, []

        async def get(key: bytes) -> Item | None:
            reads.append(key)
            return await plain(key)
        c.meta.get = get  # type: ignore[method-assign]
        await asyncio.to_thread(s3.create_bucket, Bucket="fresh")  # the key's first request
        assert reads.count(tenant_key("t")) == 1, reads  # the key's tenant state (tenant21)
        reads.clear()
        await asyncio.to_thread(s3.create_bucket, Bucket="fresh2")  # auth cached: no read
        assert reads.count(tenant_key("t")) == 0, reads
        await c.tenants.create("u")
        await c.buckets.create("u", "taken")
        reads.clear()
        with pytest.raises(ClientError) as err:  # exists (another tenant's name): no re-read
            await asyncio.to_thread(s3.create_bucket, Bucket="taken")
        assert err.value.response["Error"]["Code"] == "BucketAlreadyExists"
        assert reads.count(bucket_key("taken")) == 1, reads  # routing's read only


async def test_a_stale_cached_refusal_is_read_again(tmp_path: Path) -> None:
    """The record a CreateBucket is handed (cached before an unmark) says "deleting": the
    create reads it afresh before refusing, and makes the bucket."""
    meta, tenants = await _gateway(tmp_path)
    try:
        await tenants.create("acme")
        item = await meta.get(tenant_key("acme"))
        assert item is not None
        rec = Tenant.decode(item.value)
        rec.state = "deleting"
        stale = Item(item.key, rec.encode(), item.revision)
        made = await BucketService(meta, "us-east-1").create("acme", "b", owner=stale)
        assert made.tenant == "acme"
    finally:
        await meta.close()


async def test_a_deleted_tenants_name_is_taken_again_only_when_asked(tmp_path: Path) -> None:
    """A grant naming tenant u (another tenant's bucket policy or ACL) must not pass to a
    new customer made under u's name after u was deleted (AWS never reuses an account id):
    the create is refused unless the operator says `reuse`."""
    meta, tenants = await _gateway(tmp_path)
    try:
        await tenants.create("u")
        await tenant_delete.delete(meta, "u", None, None, no_locks)
        with pytest.raises(Conflict, match="--reuse-name"):
            await tenants.create("u")
        assert (await tenants.create("u", reuse=True)).name == "u"
        await tenant_delete.delete(meta, "u", None, None, no_locks)  # gone again: asked again
        with pytest.raises(Conflict, match="--reuse-name"):
            await tenants.create("u")
        with pytest.raises(Conflict, match="already exists"):
            await tenants.create("v")
            await tenants.create("v")
    finally:
        await meta.close()
