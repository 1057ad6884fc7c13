"""tenant22 on every backend (SQLite always, etcd when the contract session has one): what
a deleted tenant leaves is compared in the store's own transactions. A write under a grant
whose writer's delete ran while it was in flight does not commit (the commit compares the
writer's tenant record); a deleted tenant's canonical id is not given again; a tenant made
again under a deleted one's name lists none of its keys. Names are random: an etcd store
keeps every other test's tenants."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage import tenant_delete
from storage.errors import Conflict, TenantDeleting
from storage.keyspace import object_key
from storage.metadata import MetadataStore
from storage.objects import PutOptions
from storage.testing.simnodes import SimNodes
from tests.contract.test_late_commit import keydir  # noqa: F401 - fixture
from tests.contract.test_metadata_contract import store  # noqa: F401 - fixture
from tests.inproc import no_locks, sim_config, wired_cluster


async def _body() -> AsyncIterator[bytes]:
    yield b"late bytes"


async def test_tenant_records_hold_in_the_stores_transactions(
        store: MetadataStore, keydir: Path) -> None:  # noqa: F811
    cfg = sim_config(keydir, 0)
    tag = secrets.token_hex(4)
    owner, writer, other = f"t{tag}", f"u{tag}", f"v{tag}"
    async with wired_cluster(keydir, cfg, SimNodes(list(cfg.nodes)), store, owner) as c:
        b = await c.buckets.create(owner, f"b{tag}")
        await c.tenants.create(writer)
        await c.tenants.create(other)
        old_key = await c.tenants.create_key(writer)
        await c.tenants.set_identity(writer, canonical_id=f"cid-{tag}")
        await c.objects.put(b, "ok", _body(), PutOptions(size_hint=10, writer=writer))
        plain, late = store.txn_or_read, object_key(b.name, "late")

        async def txn_or_read(txn: Any, reads: Any) -> Any:  # the delete ends just before
            if late in txn.puts:  # the commit's transaction: after its checks read
                store.txn_or_read = plain  # type: ignore[method-assign]

                async def revoke() -> None:
                    for k in await c.tenants.list_keys(writer):
                        await c.tenants.revoke_key(k.access_key)
                await tenant_delete.delete(store, writer, None, revoke, no_locks)
            return await plain(txn, reads)
        store.txn_or_read = txn_or_read  # type: ignore[method-assign]
        try:
            with pytest.raises(TenantDeleting):
                await c.objects.put(b, "late", _body(),
                                    PutOptions(size_hint=10, writer=writer))
        finally:
            store.txn_or_read = plain  # type: ignore[method-assign]
        assert await store.get(late) is None
        with pytest.raises(Conflict, match="deleted tenant"):
            await c.tenants.set_identity(other, canonical_id=f"cid-{tag}")
        await c.tenants.create(writer, reuse=True)
        assert await c.tenants.list_keys(writer) == []
        assert await c.tenants.credential(old_key.access_key) is None
