"""review22c: a tenant record rewritten by a process that predates `Tenant.incarnation`
(an older gateway or worker of a set being upgraded: `Record.decode` drops fields of a
newer writer, so its write leaves the field out) must not lock the tenant out of the keys
made for it by the newer code."""

from __future__ import annotations

from pathlib import Path

import msgpack

from storage.crypto.keys import FileRootKey
from storage.keyspace import tenant_key
from storage.metadata import Txn
from storage.metadata.sqlite import SqliteStore
from storage.tenants import TenantService


async def test_a_key_outlives_an_older_writers_rewrite_of_its_tenant(tmp_path: Path) -> None:
    meta = await SqliteStore.open(tmp_path / "m.db")
    tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await tenants.load()
    try:
        await tenants.create("fresh")
        cred = await tenants.create_key("fresh")
        assert await tenants.credential(cred.access_key) == cred
        item = await meta.get(tenant_key("fresh"))
        assert item is not None
        old = msgpack.unpackb(item.value, raw=False, strict_map_key=False)
        old.pop("incarnation")  # what a pre-s22 set_identity / rotate writes back
        old["display_name"] = "Fresh Inc"
        assert await meta.txn(Txn(compares={item.key: item.revision},
                                  puts={item.key: msgpack.packb(old, use_bin_type=True)}))
        assert await tenants.credential(cred.access_key) == cred
        assert [k.access_key for k in await tenants.list_keys("fresh")] == [cred.access_key]
    finally:
        await meta.close()
