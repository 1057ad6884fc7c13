"""tenant21: a tenant's access keys stop at its delete's mark ("deleting"), not at the
revoke step a cut-short delete never reaches; in every gateway process at once (the mark
is a tenant record write: it moves the auth change stamp every credential cache keys on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import tenant_delete
from storage.buckets import BucketService
from storage.crypto.keys import FileRootKey
from storage.errors import TenantNotEmpty
from storage.metadata.sqlite import SqliteStore
from storage.tenants import TenantService


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
            await tenant_delete.delete(meta_a, "acme", None, crash)
        assert await b.credential(cred.access_key) is None
        assert await a.credential(cred.access_key) is None
        await tenant_delete.delete(meta_a, "acme", None, None)  # run again: finished
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
            await tenant_delete.delete(meta_a, "acme", None, None)
        assert await b.credential(cred.access_key) == cred
    finally:
        await meta_a.close()
        await meta_b.close()
