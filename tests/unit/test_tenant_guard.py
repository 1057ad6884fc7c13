"""A PUT's tenant KEK comes from a cache (no metadata read per PUT), so the commit compares
the tenant record's revision: a shred or a rotation made through another gateway is never
acted on late. Two gateways are two `TenantService`s over one real SQLite store; the real
S3 pipeline (`S3Server` over `Cluster`, in-memory nodes) serves one of them, via boto3."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from storage import tenants as tenants_mod
from storage.cluster import Cluster
from storage.crypto.keys import FileRootKey
from storage.metadata.sqlite import SqliteStore
from storage.tenants import TenantService
from storage.testing.simnodes import SimNodes
from tests.inproc import served_s3, sim_config

BUCKET = "guarded"


@pytest.fixture
async def gateways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                   ) -> AsyncIterator[tuple[Any, TenantService]]:
    """(an S3 client of gateway A, gateway B's tenant service). A's caches outlive the test,
    so what refuses a late PUT is the commit's compare, whatever the machine's speed."""
    monkeypatch.setattr(tenants_mod, "CACHE_TTL_S", 3600.0)
    monkeypatch.setattr(tenants_mod, "SHORT_TTL_S", 3600.0)
    cfg = sim_config(tmp_path, 4096)
    meta = await SqliteStore.open(tmp_path / "meta.db")
    root = FileRootKey(tmp_path / "root.key")
    tenants_a, tenants_b = TenantService(meta, root), TenantService(meta, root)
    await tenants_a.load()
    await tenants_b.load()
    await tenants_a.create("t")
    cred = await tenants_a.create_key("t")
    pool = ThreadPoolExecutor(2)
    cluster = Cluster.wire(cfg, meta, tenants_a, SimNodes(list(cfg.nodes)), pool, pool)
    await cluster.buckets.create("t", BUCKET)
    try:
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            yield s3, tenants_b
    finally:
        await meta.close()
        pool.shutdown()


async def test_rotation_elsewhere_then_put_commits_and_reads(
        gateways: tuple[Any, TenantService]) -> None:
    s3, other = gateways
    await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key="a", Body=b"one")  # caches KEK 1
    assert await other.rotate("t") == 2
    await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key="b", Body=b"two")
    got = await asyncio.to_thread(lambda: s3.get_object(Bucket=BUCKET, Key="b")["Body"].read())
    assert got == b"two"


async def test_shred_elsewhere_fails_the_next_put(gateways: tuple[Any, TenantService],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    s3, other = gateways
    authenticated: dict[str, Any] = {}
    real = TenantService.credential

    async def before_the_shred(self: TenantService, access_key: str) -> Any:
        """The credential as it was before the shred: the PUT below is one that was
        authenticated before the shred committed and commits after it."""
        if access_key not in authenticated:
            authenticated[access_key] = await real(self, access_key)
        return authenticated[access_key]

    states: dict[str, bool] = {}
    real_active = TenantService.active

    async def active_before_the_shred(self: TenantService, name: str) -> bool:
        """Likewise the tenant's state (authorized before the shred)."""
        if name not in states:
            states[name] = await real_active(self, name)
        return states[name]

    monkeypatch.setattr(TenantService, "credential", before_the_shred)
    monkeypatch.setattr(TenantService, "active", active_before_the_shred)
    await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key="a", Body=b"one")  # caches the KEK
    # gateway A has the KEK in its KEK cache and authenticated and authorized before the
    # shred revoked the key: only the commit's compare of the tenant record can refuse it
    await other.shred("t")
    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key="late", Body=b"late")
    err = refused.value.response["Error"]
    assert err["Code"] == "AccessDenied" and "encryption key" in err["Message"]
