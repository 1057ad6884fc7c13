"""Objects and uploads of more parts than one etcd transaction can retire, on SQLite and etcd.

Removing a version costs 2 operations per part (a GC entry, its `X` index entry deleted);
completing or aborting an upload also deletes each part record. etcd refuses a transaction
of more than `--max-txn-ops` (1024 on the members Tessera starts) whole, so before
`storage/retiring.py` a CompleteMultipartUpload, DeleteObject, overwrite or
AbortMultipartUpload of an object of more than ~510 parts failed on etcd. Here a 600-part
upload (121 parts on SQLite, which has no such limit; parts of 100 bytes: the 5 MiB minimum
lowered in the test) is completed, read,
overwritten, deleted by version and aborted through boto3 against the real gateway
pipeline on both backends (etcd: the 3-member cluster conftest.py starts, 1024 ops), and
after each: no part record, no retirement marker, every stripe of the removed version
queued for collection with its index entry gone. A retirement cut short after the commit
(as by a kill) is finished by the reclaim worker.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from storage import multipart as mp
from storage import retiring
from storage.cluster import Cluster
from storage.crypto.keys import FileRootKey
from storage.errors import IntegrityError
from storage.keyspace import (
    GC,
    RETIRING,
    object_key,
    part_prefix,
    space,
    span,
    stripe_index_key,
    system_key,
    unpack,
)
from storage.metadata import MetadataStore, Txn, open_store
from storage.metadata.etcd import EtcdStore
from storage.records import ObjectVersion
from storage.tenants import TenantService
from storage.testing.simnodes import SimNodes
from storage.workers.manifests import Manifest, load_manifest
from storage.workers.reclaim import TenantReclaimer
from tests.contract.conftest import session_tls
from tests.inproc import served_s3, sim_config

# 2 x 600 + 5 operations: over the 1024 etcd allows one transaction (TESSERA_MANY_PARTS=10000
# runs AWS's maximum: minutes, and on etcd see docs/ARCHITECTURE.md "Limits")
PARTS = int(os.environ.get("TESSERA_MANY_PARTS", "600"))
# SQLite has no transaction limit (no count of parts ever failed there): over 3 retirement
# steps shows all of the stepping that backend can, in a fraction of the time
SQLITE_PARTS = PARTS if "TESSERA_MANY_PARTS" in os.environ else 3 * retiring.STEP_PARTS + 1
BACKENDS = ["sqlite"] + (["etcd"] if os.environ.get("TESSERA_ETCD_ENDPOINTS") else [])


@pytest.fixture(params=BACKENDS)
async def served(request: pytest.FixtureRequest, tmp_path: Path, etcd_root_dir: Path,
                 monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[tuple[Any, Cluster, str]]:
    """(boto3 client, cluster, bucket) over simulated nodes and the backend's store."""
    monkeypatch.setattr(mp, "MIN_PART_SIZE", 1)  # 600 parts of 5 MiB: 3 GB per test
    endpoints = tuple(e for e in os.environ.get("TESSERA_ETCD_ENDPOINTS", "").split(",") if e)
    meta = await open_store(request.param, str(tmp_path / "meta.db"), endpoints, session_tls())
    root = (etcd_root_dir if request.param == "etcd" else tmp_path) / "root.key"
    tenants = TenantService(meta, FileRootKey(root))
    try:
        await tenants.load()
    except IntegrityError:  # a system key made by another module's test under its root key
        await meta.delete(system_key("access-secret-kek"))
        await tenants.load()
    tenant, bucket = "mp" + secrets.token_hex(4), "mp-" + secrets.token_hex(4)
    await tenants.create(tenant)
    cred = await tenants.create_key(tenant)
    cfg = sim_config(tmp_path, 0)  # no inline bodies: every part has a stripe
    pool = ThreadPoolExecutor(2)
    cluster = Cluster.wire(cfg, meta, tenants, SimNodes(list(cfg.nodes)), pool, pool)
    await cluster.buckets.create(tenant, bucket)
    try:
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            yield s3, cluster, bucket
    finally:
        await meta.close()
        pool.shutdown()


def _parts(meta: MetadataStore) -> int:
    """The part count of this backend's objects and uploads."""
    return PARTS if isinstance(meta, EtcdStore) else SQLITE_PARTS


def _bodies(meta: MetadataStore) -> list[bytes]:
    return [os.urandom(100) for _ in range(_parts(meta))]


async def _upload(s3: Any, bucket: str, key: str, bodies: list[bytes]) -> tuple[str, list]:
    """An upload of `bodies` as parts 1..N (8 at a time): (upload id, the parts listed)."""
    up = (await asyncio.to_thread(s3.create_multipart_upload, Bucket=bucket, Key=key))["UploadId"]

    def one(n: int) -> dict[str, Any]:
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n,
                           Body=bodies[n - 1])
        return {"PartNumber": n, "ETag": r["ETag"]}

    with ThreadPoolExecutor(8) as ex:
        parts = await asyncio.to_thread(lambda: list(ex.map(one, range(1, len(bodies) + 1))))
    return up, parts


async def _complete(s3: Any, bucket: str, key: str, bodies: list[bytes]) -> dict[str, Any]:
    up, parts = await _upload(s3, bucket, key, bodies)
    return await asyncio.to_thread(s3.complete_multipart_upload, Bucket=bucket, Key=key,
                                   UploadId=up, MultipartUpload={"Parts": parts})


async def _version(meta: MetadataStore, bucket: str, key: str) -> ObjectVersion:
    """The current version's record (read as the store holds it)."""
    item = await meta.get(object_key(bucket, key))
    assert item is not None
    return ObjectVersion.decode(item.value)


async def _markers(meta: MetadataStore, bucket: str) -> list[Any]:
    return [i for i in await meta.range(*space(RETIRING), limit=10_000)
            if unpack(i.key)[1] == bucket]


async def _assert_retired(meta: MetadataStore, bucket: str, stripes: list[bytes]) -> None:
    """Every stripe queued for collection with its index entry gone, no marker left."""
    assert await _markers(meta, bucket) == []
    for s in stripes:
        assert await meta.get(stripe_index_key(s)) is None, s.hex()
    queued = {unpack(i.key)[2] for i in await meta.range(*space(GC), limit=1_000_000)}
    missing = [s.hex() for s in stripes if s.hex() not in queued]
    assert missing == [], f"{len(missing)} of {len(stripes)} stripes not queued"
    # (the shared etcd: these entries name simulated nodes; nobody else collects them.
    # In batches: one txn of 10,000 deletes is over etcd's --max-txn-ops)
    mine = {s.hex() for s in stripes}
    ours = [i.key for i in await meta.range(*space(GC), limit=1_000_000)
            if unpack(i.key)[2] in mine]
    for at in range(0, len(ours), 100):
        await meta.txn(Txn(deletes=tuple(ours[at:at + 100])))


async def test_a_many_part_object_completes_reads_and_is_overwritten(
        served: tuple[Any, Cluster, str]) -> None:
    s3, cluster, bucket = served
    meta = cluster.meta
    bodies = _bodies(meta)
    await _complete(s3, bucket, "big", bodies)
    got = await asyncio.to_thread(lambda: s3.get_object(Bucket=bucket, Key="big")["Body"].read())
    assert got == b"".join(bodies)
    v = await _version(meta, bucket, "big")
    assert len(v.parts) == _parts(meta) and v.upload_id
    assert await meta.range(*span(part_prefix(v.upload_id)), limit=10) == []
    assert await _markers(meta, bucket) == []
    # a part's index entry keeps its "part" state; repair finds the version through it
    man = await load_manifest(meta, v.parts[-1].stripe_id)
    assert isinstance(man, Manifest) and man.kind == "object"
    assert man.part.stripe_id == v.parts[-1].stripe_id
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="big", Body=b"small")
    await _assert_retired(meta, bucket, [p.stripe_id for p in v.parts])
    await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key="big")


async def test_a_many_part_version_is_deleted_and_an_upload_aborted(
        served: tuple[Any, Cluster, str]) -> None:
    s3, cluster, bucket = served
    meta = cluster.meta
    await asyncio.to_thread(s3.put_bucket_versioning, Bucket=bucket,
                            VersioningConfiguration={"Status": "Enabled"})
    await _complete(s3, bucket, "v", _bodies(meta))
    v = await _version(meta, bucket, "v")
    await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key="v", VersionId=v.version_id)
    listed = await asyncio.to_thread(s3.list_object_versions, Bucket=bucket)
    assert "Versions" not in listed
    await _assert_retired(meta, bucket, [p.stripe_id for p in v.parts])
    up, _ = await _upload(s3, bucket, "a", _bodies(meta))
    stripes = [p.stripe_id for p in [mp.Part.decode(i.value) for i in await meta.range(
        *span(part_prefix(up)), limit=_parts(meta) + 1)]]
    assert len(stripes) == _parts(meta)
    await asyncio.to_thread(s3.abort_multipart_upload, Bucket=bucket, Key="a", UploadId=up)
    assert await meta.range(*span(part_prefix(up)), limit=10) == []
    await _assert_retired(meta, bucket, stripes)


async def test_a_retirement_cut_short_is_finished_by_the_reclaim_worker(
        served: tuple[Any, Cluster, str], monkeypatch: pytest.MonkeyPatch) -> None:
    s3, cluster, bucket = served
    meta = cluster.meta
    await _complete(s3, bucket, "k", _bodies(meta))
    v = await _version(meta, bucket, "k")

    async def killed(meta: MetadataStore, keys: list[bytes]) -> None:
        """As if the gateway died right after the delete's commit."""

    monkeypatch.setattr(retiring, "finish_now", killed)
    await asyncio.to_thread(s3.delete_object, Bucket=bucket, Key="k")
    assert "Contents" not in await asyncio.to_thread(s3.list_objects_v2, Bucket=bucket)
    assert len(await _markers(meta, bucket)) == 1  # nothing visible; the marker holds the rest
    assert await meta.get(stripe_index_key(v.parts[0].stripe_id)) is not None
    worker = TenantReclaimer(meta, 60.0)
    while await _markers(meta, bucket):
        assert await worker._finish_marker()  # noqa: SLF001 - the worker's marker pass
    await _assert_retired(meta, bucket, [p.stripe_id for p in v.parts])
