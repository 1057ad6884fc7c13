"""The layout-1 -> layout-2 key migration on every metadata backend (SQLite and a real
3-member etcd cluster): it goes through the metadata interface only, so both upgrade alike."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import keyspace as ks
from storage.keyspace_migration import upgrade
from storage.metadata import MetadataStore, Txn, open_store
from storage.records import unpack
from tests.contract.conftest import session_tls
from tests.contract.test_metadata_contract import BACKENDS
from tests.unit.test_keyspace_migration import layout2_records
from tests.vectors.layout1 import to_layout1


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataStore]:
    endpoints = tuple(e for e in os.environ.get("TESSERA_ETCD_ENDPOINTS", "").split(",") if e)
    s = await open_store(request.param, str(tmp_path / "meta" / "t.db"), endpoints,
                         session_tls())
    want = layout2_records()
    old = to_layout1(list(want.items()))
    clear = Txn(deletes=(*want, *(k for k, _ in old), ks.layout_key()))
    await s.txn(clear)  # the etcd cluster is shared by the contract suite
    try:
        yield s
    finally:
        await s.txn(clear)
        await s.close()


async def test_upgrade_on_each_backend(store: MetadataStore) -> None:
    want = layout2_records()
    old = to_layout1(list(want.items()))
    await store.txn(Txn(puts=dict(old)))
    assert await upgrade(store) == len(want)
    for k, v in want.items():
        item = await store.get(k)
        assert item is not None and item.value == v, k
    for k, _ in old:
        assert await store.get(k) is None, k
    layout = await store.get(ks.layout_key())
    assert layout is not None and unpack(layout.value)["version"] == ks.LAYOUT_VERSION
    assert await upgrade(store) == 0
