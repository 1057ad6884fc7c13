"""mend20h: no bucket or volume outlives a tenant delete (storage/tenant_delete.py). Bucket
and volume creates compare the tenant record (`tenant_state.tenant_compare`); the delete re-checks
for them after its mark and undoes the mark if it finds one. Each test FAILS on main."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from gateway.s3.errors_map import to_s3_error
from storage import tenant_delete
from storage.buckets import BucketService
from storage.config import config_from_mapping
from storage.crypto.keys import FileRootKey
from storage.errors import StorageError, TenantDeleting, TenantNotEmpty
from storage.keyspace import tenant_key, volume_key
from storage.metadata import Item, Txn
from storage.metadata.sqlite import SqliteStore
from storage.records import Tenant
from storage.tenants import TenantService
from storage.testing.simnodes import SimNodes
from storage.volumes import VolumeService
from tests.inproc import no_locks, sim_cluster_s3, sim_config


async def _setup(tmp_path: Path) -> tuple[SqliteStore, TenantService]:
    meta = await SqliteStore.open(tmp_path / "m.db")
    tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await tenants.load()
    await tenants.create("acme")
    return meta, tenants


def _volumes(tmp_path: Path, meta: SqliteStore, tenants: TenantService) -> VolumeService:
    nodes = [{"id": f"n{z * 2 + i}", "zone": f"az{z}", "address": f"127.0.{z + 1}.{i + 1}:1"}
             for z in range(3) for i in range(2)]
    cfg = config_from_mapping({"data_dir": str(tmp_path), "cluster": {"segment_size": 65536},
                               "profiles": {"standard": {"k": 4, "m": 2}}, "nodes": nodes},
                              tmp_path)
    return VolumeService(cfg, meta, tenants, None)  # type: ignore[arg-type]  # records only


def _delete_before_txn(meta: SqliteStore) -> None:
    """The next transaction (a create's) waits while another gateway's whole tenant delete
    runs: the create read the tenant "active" and commits after the delete. (SqliteStore's
    `txn` is its `txn_or_read` without reads: one hook covers both.)"""
    plain: Callable[[Txn, tuple[bytes, ...]],
                    Awaitable[tuple[bool, dict[bytes, Item | None]]]] = meta.txn_or_read
    armed = [True]

    async def txn_or_read(t: Txn, reads: tuple[bytes, ...]
                          ) -> tuple[bool, dict[bytes, Item | None]]:
        if armed[0]:
            armed[0] = False
            await tenant_delete.delete(meta, "acme", None, None, no_locks)
        return await plain(t, reads)
    meta.txn_or_read = txn_or_read  # type: ignore[method-assign]


async def test_a_bucket_create_racing_the_delete_fails_its_compare(tmp_path: Path) -> None:
    meta, _ = await _setup(tmp_path)
    buckets = BucketService(meta, "us-east-1")
    try:
        _delete_before_txn(meta)
        with pytest.raises(StorageError) as err:
            await buckets.create("acme", "late-bucket")
        assert to_s3_error(err.value, "late-bucket", None).code == "AccessDenied"
        assert await meta.get(tenant_key("acme")) is None
        assert await buckets.list("acme") == []
    finally:
        await meta.close()


async def test_a_volume_create_racing_the_delete_fails_its_compare(tmp_path: Path) -> None:
    meta, tenants = await _setup(tmp_path)
    vols = _volumes(tmp_path, meta, tenants)
    try:
        _delete_before_txn(meta)
        with pytest.raises(StorageError):
            await vols.create("acme", "late-volume", 1 << 20)
        assert await meta.get(volume_key("acme", "late-volume")) is None
    finally:
        await meta.close()


async def test_a_bucket_made_before_the_mark_undoes_the_delete(tmp_path: Path) -> None:
    """Made after the admin's "no buckets" check, before the mark: the delete refuses,
    names what to delete first, and leaves the tenant active (it can delete the bucket)."""
    meta, tenants = await _setup(tmp_path)
    buckets = BucketService(meta, "us-east-1")
    try:
        await buckets.create("acme", "early-bucket")
        with pytest.raises(TenantNotEmpty, match="still owns buckets.*delete its buckets"):
            await tenant_delete.delete(meta, "acme", None, None, no_locks)
        item = await meta.get(tenant_key("acme"))
        assert item is not None and Tenant.decode(item.value).state == "active"
        await tenants.create_key("acme")  # usable again
    finally:
        await meta.close()


async def test_a_volume_made_before_the_mark_undoes_the_delete(tmp_path: Path) -> None:
    meta, tenants = await _setup(tmp_path)
    vols = _volumes(tmp_path, meta, tenants)
    try:
        await vols.create("acme", "v", 1 << 20)
        with pytest.raises(TenantNotEmpty, match="still owns volumes"):
            await tenant_delete.delete(meta, "acme", None, None, no_locks)
        item = await meta.get(tenant_key("acme"))
        assert item is not None and Tenant.decode(item.value).state == "active"
    finally:
        await meta.close()


async def test_a_deleting_tenant_makes_nothing_and_says_why(tmp_path: Path) -> None:
    """A delete cut short after its mark: creates say the tenant is being deleted and how
    to finish (S3 AccessDenied, admin 409 TenantDeleting), not "not found" / "destroyed"."""
    meta, tenants = await _setup(tmp_path)
    buckets = BucketService(meta, "us-east-1")

    async def crash() -> None:
        raise ConnectionError("killed before the revocation")
    try:
        with pytest.raises(ConnectionError):
            await tenant_delete.delete(meta, "acme", None, crash, no_locks)
        for make in (lambda: buckets.create("acme", "b"), lambda: tenants.create_key("acme"),
                     lambda: _volumes(tmp_path, meta, tenants).create("acme", "v", 1 << 20)):
            with pytest.raises(TenantDeleting, match="run `tessera tenant delete acme` again"):
                await make()
        item = await meta.get(tenant_key("acme"))
        with pytest.raises(TenantDeleting):  # what a write's commit asks (auth of writes)
            tenants.revalidate("acme", None, item)
        await tenant_delete.delete(meta, "acme", None, None, no_locks)  # the re-run finishes it
        assert await meta.get(tenant_key("acme")) is None
    finally:
        await meta.close()


async def test_an_edit_of_the_tenant_does_not_fail_a_create(tmp_path: Path) -> None:
    """The tenant record moving under a create (an identity edit) is retried, not taken
    for "bucket exists"."""
    meta, tenants = await _setup(tmp_path)
    buckets = BucketService(meta, "us-east-1")
    plain, armed = meta.txn, [True]

    async def txn(t: Txn) -> bool:
        if armed[0]:
            armed[0] = False
            await tenants.set_identity("acme", display_name="Acme Corp")
        return await plain(t)
    try:
        meta.txn = txn  # type: ignore[method-assign]
        await buckets.create("acme", "b")
        assert await buckets.list("acme")
    finally:
        await meta.close()


async def test_s3_answers_of_a_deleting_tenant(tmp_path: Path) -> None:
    """Through boto3: a tenant left "deleting" (its delete cut short before the revocation):
    its own key no longer authenticates (GET, CreateBucket, PUT: 403 InvalidAccessKeyId,
    tenant21); another tenant granted read and write on its bucket reads, and its PUT, plain
    or SSE-KMS, is 403 AccessDenied saying the account is being deleted (not 500)."""
    cfg = sim_config(tmp_path, 0)
    async with sim_cluster_s3(tmp_path, cfg, SimNodes(list(cfg.nodes)), "bkt") as (c, s3):
        await asyncio.to_thread(s3.put_object, Bucket="bkt", Key="k", Body=b"x" * 5000)
        await c.tenants.create("u")
        other = await c.tenants.create_key("u")
        await asyncio.to_thread(s3.put_bucket_policy, Bucket="bkt", Policy=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": "u"},
                "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::bkt/*"}]}))
        s3u = boto3.client("s3", endpoint_url=s3.meta.endpoint_url, region_name="us-east-1",
                           aws_access_key_id=other.access_key,
                           aws_secret_access_key=other.secret_key, config=s3.meta.config)
        # the mark a delete cut short leaves (a delete itself would refuse: "bkt" is there)
        await c.meta.txn(Txn(puts={tenant_key("t"): _marked(await c.meta.get(tenant_key("t")))}))
        for call, kw in ((s3.get_object, {"Bucket": "bkt", "Key": "k"}),
                         (s3.create_bucket, {"Bucket": "late"}),
                         (s3.put_object, {"Bucket": "bkt", "Key": "n", "Body": b"y"})):
            with pytest.raises(ClientError) as err:
                await asyncio.to_thread(call, **kw)
            e = err.value.response
            assert (e["ResponseMetadata"]["HTTPStatusCode"], e["Error"]["Code"]) == \
                (403, "InvalidAccessKeyId"), e
        got = await asyncio.to_thread(lambda: s3u.get_object(Bucket="bkt", Key="k")["Body"].read())
        assert got == b"x" * 5000
        for kw in ({}, {"ServerSideEncryption": "aws:kms"}):
            with pytest.raises(ClientError) as err:
                await asyncio.to_thread(s3u.put_object, Bucket="bkt", Key="n", Body=b"y", **kw)
            e = err.value.response
            assert (e["ResponseMetadata"]["HTTPStatusCode"], e["Error"]["Code"]) == \
                (403, "AccessDenied"), e
            assert "being deleted" in e["Error"]["Message"]


def _marked(item: Item | None) -> bytes:
    """The tenant record `item` in the "deleting" state (what a delete's first step writes)."""
    assert item is not None
    t = Tenant.decode(item.value)
    t.state = "deleting"
    return t.encode()
