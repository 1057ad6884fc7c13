"""After `tessera tenant shred`, the tenant's records, shards, queue entries and bucket names
are reclaimed, and `tessera tenant delete` then succeeds; a tenant holding COMPLIANCE-locked
versions cannot be shredded before they expire.

The cluster runs with 10-second days (restores, lifecycle passes every second) and a 1-second
GC grace; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import sqlite3
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.admincli import CliError, admin_request
from storage.cluster import Cluster
from storage.config import load_config
from storage.keyspace import MalformedKey, unpack
from storage.volumes import VolumeService
from tests.integration.cluster import LocalCluster
from tests.integration.test_archive import DAY, restore, run_once, wait_for
from tests.integration.test_tenants import tessera

MiB = 1 << 20


@pytest.fixture(scope="module")
def rc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TESSERA_GC_GRACE_S", "1")
        c = LocalCluster(tmp_path_factory.mktemp("reclaim"),
                         up_args=["--day-seconds", str(DAY)]).start()
    yield c
    c.stop()


def shard_files(c: LocalCluster) -> dict[str, int]:
    """Every shard file on the nodes' disks ("node/name") and its size."""
    out = {}
    for node, files in c.shard_files().items():
        for p in files:
            try:
                out[f"{node}/{p.name}"] = p.stat().st_size
            except FileNotFoundError:  # collected meanwhile
                pass
    return out


def records_naming(c: LocalCluster, names: set[str]) -> list[tuple[str, ...]]:
    """Every metadata key (unpacked) with a component in `names`, read from the SQLite file."""
    cfg = tomllib.loads((c.data / "tessera.toml").read_text())
    db = c.data / cfg.get("metadata", {}).get("path", "meta/tessera.db")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        keys = [bytes(row[0]) for row in conn.execute("SELECT k FROM kv")]
    finally:
        conn.close()
    out = []
    for k in keys:
        try:
            parts = unpack(k)
        except MalformedKey:
            continue
        if names & set(parts):
            out.append(parts)
    return out


def tenant(c: LocalCluster, name: str) -> dict[str, Any]:
    return admin_request("GET", f"/tenants/{name}", env=c.env)


def pending_restores(c: LocalCluster) -> int:
    """Restore jobs pending, as `tessera status` shows them (its admin API call)."""
    return int(admin_request("GET", "/status", env=c.env)["archive"]["restores_pending"])


def write_volume(c: LocalCluster, owner: str, data: bytes) -> None:
    """Write a volume's first extents through the storage library, as the block driver does."""
    async def go() -> None:
        cl = await Cluster.open(load_config(Path(c.env["TESSERA_CONFIG"])))
        try:
            h = await VolumeService(cl.cfg, cl.meta, cl.tenants, cl.stripes).open(
                owner, "vol", holder="test")
            try:
                await h.write(0, data)
            finally:
                await h.close()
        finally:
            await cl.close()
    asyncio.run(go())


def test_shred_reclaims_records_shards_queues_and_names(rc: LocalCluster) -> None:
    before = shard_files(rc)
    s3 = rc.tenant_client("doomed")
    s3.create_bucket(Bucket="doomed-a")
    s3.put_bucket_versioning(Bucket="doomed-a", VersioningConfiguration={"Status": "Enabled"})
    for _ in range(2):
        s3.put_object(Bucket="doomed-a", Key="twice", Body=os.urandom(MiB))
    s3.put_object(Bucket="doomed-a", Key="deep", Body=os.urandom(300_000),
                  StorageClass="DEEP_ARCHIVE")
    assert restore(s3, "deep", tier="Bulk", bucket="doomed-a") == 202  # 20 s with 10-s days
    s3.put_bucket_lifecycle_configuration(Bucket="doomed-a", LifecycleConfiguration={"Rules": [
        {"ID": "cold", "Status": "Enabled", "Filter": {"Prefix": "lc/"},
         "Transitions": [{"Days": 1, "StorageClass": "GLACIER"}]}]})
    s3.put_object(Bucket="doomed-a", Key="lc/x", Body=os.urandom(200_000))
    up = s3.create_multipart_upload(Bucket="doomed-a", Key="mpu")["UploadId"]
    s3.upload_part(Bucket="doomed-a", Key="mpu", UploadId=up, PartNumber=1,
                   Body=os.urandom(MiB))
    s3.create_bucket(Bucket="doomed-b")
    s3.put_object(Bucket="doomed-b", Key="k", Body=os.urandom(500_000))
    s3.put_bucket_logging(Bucket="doomed-a", BucketLoggingStatus={"LoggingEnabled": {
        "TargetBucket": "doomed-b", "TargetPrefix": "logs/"}})
    s3.head_object(Bucket="doomed-a", Key="twice")  # a request to log
    admin_request("POST", "/tenants/doomed/kms-keys", {"aliases": ["doomed-key"]},
                  env=rc.env)
    vol = admin_request("POST", "/tenants/doomed/volumes", {"name": "vol", "size": "16M"},
                        env=rc.env)
    write_volume(rc, "doomed", os.urandom(2 * MiB))
    loaded = shard_files(rc)
    mine = set(loaded) - set(before)
    assert sum(loaded[f] for f in mine) > 5 * MiB
    assert pending_restores(rc) >= 1
    names = {"doomed", "doomed-a", "doomed-b", up, vol["id"]}  # (P, upload), (VX, volume)
    held = {"AL", "AR", "KMS", "KA", "VOL", "VX", "U", "P", "B", "TB", "O", "V"}
    wait_for(lambda: held <= {r[0] for r in records_naming(rc, names)},
             what="every kind of record to exist")

    r = tessera(rc, "tenant", "shred", "doomed", "--confirm", "doomed")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: tenant(rc, "doomed")["reclaimed"], what="the tenant to be reclaimed")
    shown = tenant(rc, "doomed")
    assert shown["state"] == "shredded" and shown["buckets"] == 0
    # Records: nothing but the tenant record names the tenant or its buckets any more.
    assert records_naming(rc, names) == [("T", "doomed")]
    # Shards: every file the tenant wrote is collected, so the bytes on disk go down.
    wait_for(lambda: not mine & set(shard_files(rc)), timeout=60,
             what="the tenant's shards to be collected")
    assert sum(shard_files(rc).values()) < sum(loaded.values()) - 5 * MiB
    # Queues: no restore of it pending; lifecycle passes no longer visit its buckets.
    assert pending_restores(rc) == 0
    rep = json.loads(run_once(rc))
    assert rep["buckets"] == 0 and rep["errors"] == 0, rep
    # Names: another tenant takes the bucket names, and finds nothing of the old owner.
    other = rc.client()
    for name in ("doomed-a", "doomed-b"):
        other.create_bucket(Bucket=name)
        v = other.list_object_versions(Bucket=name)
        assert not v.get("Versions") and not v.get("DeleteMarkers")
        assert not other.list_multipart_uploads(Bucket=name).get("Uploads")
    # The tenant can now be deleted, and its name used again from scratch.
    r = tessera(rc, "tenant", "delete", "doomed")
    assert r.returncode == 0, r.stderr
    with pytest.raises(CliError):
        tenant(rc, "doomed")
    again = rc.tenant_client("doomed", reuse_name=True)
    assert again.list_buckets()["Buckets"] == []
    assert admin_request("GET", "/tenants/doomed/volumes", env=rc.env) == {"volumes": []}
    kms = admin_request("GET", "/tenants/doomed/kms-keys", env=rc.env)["keys"]
    assert not any("doomed-key" in json.dumps(k) for k in kms)


def test_shred_refused_while_compliance_locked_then_reclaimed(rc: LocalCluster) -> None:
    s3 = rc.tenant_client("locked")
    s3.create_bucket(Bucket="locked-b", ObjectLockEnabledForBucket=True)
    # long enough for the refusal below even on a loaded machine, short enough to wait out
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=20)
    s3.put_object(Bucket="locked-b", Key="k", Body=b"kept", ObjectLockMode="COMPLIANCE",
                  ObjectLockRetainUntilDate=until)
    r = tessera(rc, "tenant", "shred", "locked", "--confirm", "locked")
    assert r.returncode != 0
    assert "COMPLIANCE retention until" in r.stderr and "cannot be shredded" in r.stderr
    assert tenant(rc, "locked")["state"] == "active"
    assert s3.get_object(Bucket="locked-b", Key="k")["Body"].read() == b"kept"
    # Once the retention has passed, the shred goes through and the tenant is reclaimed.
    wait_for(lambda: tessera(rc, "tenant", "shred", "locked", "--confirm", "locked"
                             ).returncode == 0, timeout=60, interval=1.0,
             what="the retention to expire")
    wait_for(lambda: tenant(rc, "locked")["reclaimed"], what="the tenant to be reclaimed")
    r = tessera(rc, "tenant", "delete", "locked")
    assert r.returncode == 0, r.stderr
    rc.client().create_bucket(Bucket="locked-b")
