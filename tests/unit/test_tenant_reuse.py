"""tenant22: what a deleted tenant leaves stays its own. Its canonical id is never given to
another tenant (ACL grants by id that named it would pass), and a tenant made again under
its name (`reuse`) neither lists nor authenticates with the deleted one's keys: a key is
its tenant record's (the record's incarnation), not the name's."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import tenant_delete
from storage.crypto.keys import FileRootKey
from storage.errors import Conflict, TenantDeleting
from storage.metadata.sqlite import SqliteStore
from storage.tenants import TenantService
from tests.inproc import no_locks


async def _tenants(tmp_path: Path) -> tuple[SqliteStore, TenantService]:
    meta = await SqliteStore.open(tmp_path / "m.db")
    tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await tenants.load()
    return meta, tenants


async def _delete(meta: SqliteStore, tenants: TenantService, name: str) -> None:
    """`tenant delete` as the admin API runs it: keys revoked, then the record goes."""
    async def revoke() -> None:
        for k in await tenants.list_keys(name):
            await tenants.revoke_key(k.access_key)
    await tenant_delete.delete(meta, name, None, revoke, no_locks)


async def test_a_deleted_tenants_canonical_id_is_not_given_again(tmp_path: Path) -> None:
    meta, tenants = await _tenants(tmp_path)
    try:
        for name in ("u", "w", "v"):
            await tenants.create(name)
        await tenants.set_identity("u", canonical_id="cid-of-u")
        await _delete(meta, tenants, "u")
        await _delete(meta, tenants, "w")  # its canonical id was its name
        for cid in ("cid-of-u", "w"):
            with pytest.raises(Conflict, match="deleted tenant"):
                await tenants.set_identity("v", canonical_id=cid)
        assert (await tenants.get("v")).canonical_id == ""
        # a new tenant's default canonical id is its name: that one needs reuse too
        with pytest.raises(Conflict, match="canonical id"):
            await tenants.create("cid-of-u")
        assert (await tenants.create("cid-of-u", reuse=True)).name == "cid-of-u"
        assert (await tenants.set_identity("v", canonical_id="fresh")).canonical_id == "fresh"
        await tenants.create("x")
        await tenant_delete._mark(meta, "x")  # a delete under way: its id is being recorded
        with pytest.raises(TenantDeleting):
            await tenants.set_identity("x", canonical_id="other")
    finally:
        await meta.close()


async def test_a_reused_name_does_not_inherit_the_old_tenants_keys(tmp_path: Path) -> None:
    meta, tenants = await _tenants(tmp_path)
    try:
        await tenants.create("bob")
        old = await tenants.create_key("bob")
        await _delete(meta, tenants, "bob")
        # newuser22: `key list --tenant bob` now can say the name was deleted
        assert await tenants.was_deleted("bob") and not await tenants.was_deleted("nobody")
        await tenants.create("bob", reuse=True)
        assert not await tenants.was_deleted("bob")
        new = await tenants.create_key("bob")
        assert [k.access_key for k in await tenants.list_keys("bob")] == [new.access_key]
        assert await tenants.credential(new.access_key) == new
        assert await tenants.credential(old.access_key) is None
        # every key is still listed (the old one revoked), each with its tenant's name
        assert {k.access_key for k in await tenants.list_keys()} >= {old.access_key,
                                                                    new.access_key}
    finally:
        await meta.close()
