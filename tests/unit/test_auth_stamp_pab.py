"""The tenant public access block changed through another process (its own SQLite store on
the same file, as another `--workers` worker) is obeyed by this one's next check, though
this one had it cached: the auth change stamp (`<file>.authgen`) moved (review15d: the
commit claims it for the public access block too, but tested only revoked keys)."""

from __future__ import annotations

from pathlib import Path

from storage.crypto.keys import FileRootKey
from storage.metadata.sqlite import SqliteStore
from storage.tenants import TenantService, begin_request


async def test_a_public_access_block_set_elsewhere_is_obeyed_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "meta.db")
    here_store, there_store = await SqliteStore.open(path), await SqliteStore.open(path)
    try:
        root = FileRootKey(tmp_path / "root.key")
        here, there = TenantService(here_store, root), TenantService(there_store, root)
        await there.load()
        await here.load()
        await there.create("t1")
        begin_request()
        assert await here.public_access_block("t1") == {}  # cached here
        flags = {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                 "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
        await there.set_public_access_block("t1", flags)
        begin_request()  # the next request here
        assert await here.public_access_block("t1") == flags
        await there.set_public_access_block("t1", {})
        begin_request()
        assert await here.public_access_block("t1") == {}
    finally:
        await here_store.close()
        await there_store.close()
