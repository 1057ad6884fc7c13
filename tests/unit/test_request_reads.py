"""Each S3 request reads its bucket's record from the metadata store exactly once.

The real gateway pipeline (`S3Server`) over a real `Cluster` (SQLite metadata, the real
wiring over in-memory nodes), driven by boto3; the metadata store is the real SQLite store,
wrapped only to count the reads of the bucket's key (`get`, or a `range` covering it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from storage.cluster import Cluster
from storage.crypto.keys import FileRootKey
from storage.keyspace import bucket_key
from storage.metadata import Item, MetadataStore, Txn
from storage.metadata.sqlite import SqliteStore
from storage.tenants import TenantService
from storage.testing.simnodes import SimNodes
from tests.inproc import served_s3, sim_config

BUCKET = "counted"


class CountingStore:
    """The real store, counting the reads that return or cover one key."""

    def __init__(self, inner: MetadataStore, watched: bytes) -> None:
        self.inner, self.watched, self.reads = inner, watched, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, key: bytes) -> Item | None:
        self.reads += key == self.watched
        return await self.inner.get(key)

    async def range(self, start: bytes, end: bytes, limit: int = 1000,
                    reverse: bool = False) -> list[Item]:
        self.reads += start <= self.watched < end
        return await self.inner.range(start, end, limit, reverse)

    async def put(self, key: bytes, value: bytes) -> int:
        return await self.inner.put(key, value)

    async def delete(self, key: bytes) -> bool:
        return await self.inner.delete(key)

    async def txn(self, txn: Txn) -> bool:
        return await self.inner.txn(txn)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Any, CountingStore]]:
    cfg = sim_config(tmp_path, 1024)
    store = CountingStore(await SqliteStore.open(tmp_path / "meta.db"), bucket_key(BUCKET))
    meta: MetadataStore = store  # type: ignore[assignment]
    tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await tenants.load()
    await tenants.create("t")
    cred = await tenants.create_key("t")
    pool = ThreadPoolExecutor(2)
    cluster = Cluster.wire(cfg, meta, tenants, SimNodes(list(cfg.nodes)), pool, pool)
    await cluster.buckets.create("t", BUCKET)
    try:
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            yield s3, store
    finally:
        await store.close()
        pool.shutdown()


async def _reads(store: CountingStore, call: Any, **kwargs: Any) -> int:
    before = store.reads
    await asyncio.to_thread(call, Bucket=BUCKET, **kwargs)
    return store.reads - before


@pytest.mark.parametrize("size", [100, 300_000], ids=["inline", "sharded"])
async def test_one_bucket_read_per_put_and_get(gateway: tuple[Any, CountingStore],
                                               size: int) -> None:
    s3, store = gateway
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert await _reads(store, s3.put_object, Key="k", Body=body) == 1
    assert await _reads(store, s3.head_object, Key="k") == 1
    before = store.reads
    got = await asyncio.to_thread(lambda: s3.get_object(Bucket=BUCKET, Key="k")["Body"].read())
    assert got == body
    assert store.reads - before == 1
    assert await _reads(store, s3.delete_object, Key="k") == 1


async def test_one_bucket_read_per_put_in_a_versioned_bucket(
        gateway: tuple[Any, CountingStore]) -> None:
    s3, store = gateway
    await asyncio.to_thread(s3.put_bucket_versioning, Bucket=BUCKET,
                            VersioningConfiguration={"Status": "Enabled"})
    assert await _reads(store, s3.put_object, Key="v", Body=b"one") == 1
    assert await _reads(store, s3.put_object, Key="v", Body=b"two") == 1
    assert await _reads(store, s3.get_object, Key="v") == 1


async def test_one_bucket_read_per_listing_and_bucket_delete(
        gateway: tuple[Any, CountingStore]) -> None:
    s3, store = gateway
    assert await _reads(store, s3.list_objects_v2) == 1
    assert await _reads(store, s3.list_multipart_uploads) == 1
    assert await _reads(store, s3.delete_bucket) == 1


async def test_one_bucket_read_per_multipart_step_and_copy(
        gateway: tuple[Any, CountingStore]) -> None:
    s3, store = gateway
    before = store.reads
    up = await asyncio.to_thread(s3.create_multipart_upload, Bucket=BUCKET, Key="m")
    assert store.reads - before == 1
    uid = up["UploadId"]
    before = store.reads
    part = await asyncio.to_thread(s3.upload_part, Bucket=BUCKET, Key="m", UploadId=uid,
                                   PartNumber=1, Body=b"p" * 2000)
    assert store.reads - before == 1
    assert await _reads(store, s3.list_parts, Key="m", UploadId=uid) == 1
    assert await _reads(store, s3.complete_multipart_upload, Key="m", UploadId=uid,
                        MultipartUpload={"Parts": [{"PartNumber": 1,
                                                    "ETag": part["ETag"]}]}) == 1
    assert await _reads(store, s3.copy_object, Key="c",
                        CopySource={"Bucket": BUCKET, "Key": "m"}) == 1
    assert await _reads(store, s3.put_object_tagging, Key="c",
                        Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}) == 1
