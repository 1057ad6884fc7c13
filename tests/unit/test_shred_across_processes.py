"""A shred made through one gateway process stops reads in every other one within
SHORT_TTL_S (storage/tenants.py): each process has its own key caches, and every read names
a KEK version, which was once answered from a 60 s cache with no look at the record."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from storage import tenants as tenants_mod
from storage.crypto.keys import FileRootKey
from storage.errors import KeyUnavailable
from storage.metadata.sqlite import SqliteStore
from storage.tenants import SHORT_TTL_S, TenantService


async def test_a_shred_elsewhere_stops_named_version_reads_within_the_short_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(tenants_mod, "time", types.SimpleNamespace(monotonic=lambda: now[0], time=lambda: now[0]))
    meta = await SqliteStore.open(tmp_path / "meta.db")
    try:
        root = FileRootKey(tmp_path / "root.key")
        here = TenantService(meta, root)  # type: ignore[arg-type]
        there = TenantService(meta, root)  # the other gateway worker
        await here.load()
        await there.load()
        await here.create("t")
        v, kek = await there.kek("t")
        assert await there.kek("t", v) == (v, kek)  # cached in the other process
        await here.shred("t")
        now[0] += SHORT_TTL_S / 2
        assert await there.kek("t", v) == (v, kek)  # within the bound: still the cache
        now[0] += SHORT_TTL_S / 2 + 0.01
        with pytest.raises(KeyUnavailable):
            await there.kek("t", v)
        assert not [k for k in there._kek_cache if k[0] == "t"]  # dropped from memory
        with pytest.raises(KeyUnavailable):
            await there.kek("t", v)
    finally:
        await meta.close()


async def test_a_read_in_flight_across_a_shred_does_not_cache_the_keys_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KEK lookup whose record read began before a shred in the same process and ended
    after it must not re-cache the key (nor mark the tenant checked for another 5 s)."""
    meta = await SqliteStore.open(tmp_path / "meta.db")
    try:
        svc = TenantService(meta, FileRootKey(tmp_path / "root.key"))  # type: ignore[arg-type]
        await svc.load()
        await svc.create("t")
        v, _ = await svc.kek("t")
        real_get = svc.get

        async def get_then_shred(name: str) -> Any:
            t = await real_get(name)  # read before the shred...
            await svc.shred(name)  # ...which lands before the lookup finishes
            return t

        monkeypatch.setattr(svc, "get", get_then_shred)
        svc._kek_checked.clear()  # its 5 s are over: the lookup reads the record
        await svc.kek("t", v)  # began before the shred: answered, not kept
        monkeypatch.setattr(svc, "get", real_get)
        assert not [k for k in svc._kek_cache if k[0] == "t"]
        with pytest.raises(KeyUnavailable):
            await svc.kek("t", v)
    finally:
        await meta.close()
