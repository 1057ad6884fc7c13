"""Object Lock against callers that should not get past it, through the real S3 pipeline
(`S3Server` over a wired `Cluster`, in-memory nodes, SQLite) and boto3:

- `x-amz-bypass-governance-retention` is honoured only for a caller holding
  s3:BypassGovernanceRetention (AWS): the bucket's tenant unless its bucket policy denies
  it, anyone else only through a policy Allow. An ACL grant (public-read-write) or a policy
  granting the delete alone gives no bypass.
- A tenant is not shredded while a version is under a legal hold, or under COMPLIANCE
  retention, or (without the explicit override) under GOVERNANCE retention.
- PutObjectRetention and PutObjectLegalHold racing each other (two gateways) never undo what
  the other wrote: each derives the new lock from the version as its compare-and-swap read
  it. The race is forced: the other edit commits between the handler's read and its commit.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED

from ops.botoconfig import no_retries
from storage import keys_rotation as kr
from storage import object_lock as ol
from storage.cluster import Cluster
from storage.keyspace import bucket_key, object_key, shred_key
from storage.metadata import Txn
from storage.records import pack, unpack
from storage.testing.simnodes import SimNodes
from storage.workers.keys import HOLD_RECHECK_S, ShredScheduler
from tests.inproc import error_code, served_s3, sim_config, wired_cluster

FAR = datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)
LATER = datetime.datetime(2101, 1, 1, tzinfo=datetime.UTC)


@dataclass
class Gateway:
    cluster: Cluster
    owner: Any  # boto3 client of tenant "t", the buckets' owner
    other: Any  # boto3 client of tenant "u"
    anonymous: Any


def _client(endpoint: str, ak: str | None, sk: str | None) -> Any:
    extra: dict[str, Any] = {"signature_version": UNSIGNED} if ak is None else {}
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak or "x",
                        aws_secret_access_key=sk or "x", region_name="us-east-1",
                        config=no_retries(s3={"addressing_style": "path"}, **extra))


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    cfg = sim_config(tmp_path, 4096)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes))) as cluster:
        tenants = cluster.tenants
        await tenants.create("u")
        t_cred, u_cred = await tenants.create_key("t"), await tenants.create_key("u")
        async with served_s3(cluster, cfg, t_cred.access_key, t_cred.secret_key) as s3:
            url = s3.meta.endpoint_url
            yield Gateway(cluster, s3, _client(url, u_cred.access_key, u_cred.secret_key),
                          _client(url, None, None))


async def _run(call: Any, **kw: Any) -> str | None:
    return await asyncio.to_thread(error_code, call, **kw)


async def _locked(s3: Any, bucket: str, **create: Any) -> str:
    """A lock-enabled bucket holding "k" under GOVERNANCE retention; the version id."""
    await asyncio.to_thread(s3.create_bucket, Bucket=bucket, ObjectLockEnabledForBucket=True,
                            **create)
    put = await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="k", Body=b"x",
                                  ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=FAR)
    return str(put["VersionId"])


async def _held(s3: Any, bucket: str) -> str:
    """`_locked`'s bucket and version "k", also under a legal hold; the version id."""
    vid = await _locked(s3, bucket)
    await asyncio.to_thread(s3.put_object_legal_hold, Bucket=bucket, Key="k",
                            VersionId=vid, LegalHold={"Status": "ON"})
    return vid


async def _versions(s3: Any, bucket: str) -> list[str]:
    got = await asyncio.to_thread(s3.list_object_versions, Bucket=bucket)
    return [v["VersionId"] for v in got.get("Versions", [])]


async def test_an_acl_grant_gives_no_bypass(gw: Gateway) -> None:
    vid = await _locked(gw.owner, "pub", ACL="public-read-write")
    for who in (gw.anonymous, gw.other):
        assert await _run(who.delete_object, Bucket="pub", Key="k", VersionId=vid,
                          BypassGovernanceRetention=True) == "AccessDenied"
        assert await _run(who.delete_objects, Bucket="pub", Delete={"Objects": [
            {"Key": "k", "VersionId": vid}]}, BypassGovernanceRetention=True) is None
    assert await _versions(gw.owner, "pub") == [vid]
    # The WRITE grant still deletes what no lock protects (the bypass header changes nothing).
    assert await _run(gw.anonymous.delete_object, Bucket="pub", Key="k",
                      BypassGovernanceRetention=True) is None


async def test_a_policy_decides_who_may_bypass(gw: Gateway) -> None:
    vid = await _locked(gw.owner, "pol")
    deletes = {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::u:root"},
               "Action": ["s3:DeleteObjectVersion", "s3:PutObjectRetention"],
               "Resource": "arn:aws:s3:::pol/*"}

    async def policy(*statements: dict[str, Any]) -> None:
        await asyncio.to_thread(gw.owner.put_bucket_policy, Bucket="pol", Policy=json.dumps(
            {"Version": "2012-10-17", "Statement": list(statements)}))

    await policy(deletes)
    shorter = {"Mode": "GOVERNANCE", "RetainUntilDate": FAR - datetime.timedelta(days=1)}
    assert await _run(gw.other.put_object_retention, Bucket="pol", Key="k", VersionId=vid,
                      Retention=shorter, BypassGovernanceRetention=True) == "AccessDenied"
    assert await _run(gw.other.delete_object, Bucket="pol", Key="k", VersionId=vid,
                      BypassGovernanceRetention=True) == "AccessDenied"
    # The bucket's tenant, denied the permission by its own bucket policy, has no bypass.
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:BypassGovernanceRetention",
            "Resource": "arn:aws:s3:::pol/*"}
    await policy(deletes, deny)
    assert await _run(gw.owner.put_object_retention, Bucket="pol", Key="k", VersionId=vid,
                      Retention=shorter, BypassGovernanceRetention=True) == "AccessDenied"
    assert await _run(gw.owner.delete_object, Bucket="pol", Key="k", VersionId=vid,
                      BypassGovernanceRetention=True) == "AccessDenied"
    assert await _versions(gw.owner, "pol") == [vid]
    # Granted the permission, the other tenant may bypass.
    await policy(deletes, {**deny, "Effect": "Allow",
                           "Principal": {"AWS": "arn:aws:iam::u:root"}})
    assert await _run(gw.other.put_object_retention, Bucket="pol", Key="k", VersionId=vid,
                      Retention=shorter, BypassGovernanceRetention=True) is None
    assert await _run(gw.other.delete_object, Bucket="pol", Key="k", VersionId=vid,
                      BypassGovernanceRetention=True) is None
    assert await _versions(gw.owner, "pol") == []


def _race_before_commit(gw: Gateway, bucket: str, key: str, racer: Any) -> list[bool]:
    """Arm: the next transaction writing `key`'s record runs `racer()` (another gateway's
    edit, committed) just before it. Returns the list the race appends to once run."""
    meta = gw.cluster.meta
    real = meta.txn
    ran: list[bool] = []

    async def txn(t: Txn) -> Any:
        if not ran and object_key(bucket, key) in t.puts:
            ran.append(True)
            await racer()
        return await real(t)

    meta.txn = txn  # type: ignore[method-assign]
    return ran


async def test_a_legal_hold_racing_a_retention_keeps_it(gw: Gateway) -> None:
    vid = await _locked(gw.owner, "race")
    b = await gw.cluster.buckets.get("t", "race")
    ran = _race_before_commit(gw, "race", "k", lambda: gw.cluster.objects.update_version(
        b, "k", vid, lock={"mode": "COMPLIANCE", "until": LATER.timestamp()}))
    await asyncio.to_thread(gw.owner.put_object_legal_hold, Bucket="race", Key="k",
                            LegalHold={"Status": "OFF"})
    assert ran
    got = await asyncio.to_thread(gw.owner.get_object_retention, Bucket="race", Key="k")
    assert got["Retention"] == {"Mode": "COMPLIANCE", "RetainUntilDate": LATER}
    assert await _run(gw.owner.delete_object, Bucket="race", Key="k", VersionId=vid,
                      BypassGovernanceRetention=True) == "AccessDenied"


async def test_a_retention_racing_a_legal_hold_keeps_it(gw: Gateway) -> None:
    vid = await _locked(gw.owner, "race")
    b = await gw.cluster.buckets.get("t", "race")
    ran = _race_before_commit(gw, "race", "k", lambda: gw.cluster.objects.update_version(
        b, "k", vid, lock={"mode": "GOVERNANCE", "until": FAR.timestamp(),
                           "legal_hold": "ON"}))
    await asyncio.to_thread(gw.owner.put_object_retention, Bucket="race", Key="k",
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": LATER})
    assert ran
    got = await asyncio.to_thread(gw.owner.get_object_legal_hold, Bucket="race", Key="k")
    assert got["LegalHold"] == {"Status": "ON"}
    assert await _run(gw.owner.delete_object, Bucket="race", Key="k", VersionId=vid,
                      BypassGovernanceRetention=True) == "AccessDenied"


def _race_bucket_update(gw: Gateway, bucket: str, racer: Any) -> list[bool]:
    """Arm: the next transaction writing `bucket`'s record runs `racer()` (another gateway's
    change of the bucket, committed) just before it."""
    meta = gw.cluster.meta
    real = meta.txn
    ran: list[bool] = []

    async def txn(t: Txn) -> Any:
        if not ran and bucket_key(bucket) in t.puts:
            ran.append(True)
            await racer()
        return await real(t)

    meta.txn = txn  # type: ignore[method-assign]
    return ran


LOCK_CONF = {"ObjectLockEnabled": "Enabled",
             "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}}


async def test_a_suspend_racing_a_lock_configuration_is_refused(gw: Gateway) -> None:
    """Object Lock and suspended versioning never hold together, whichever commits first."""
    await asyncio.to_thread(gw.owner.create_bucket, Bucket="vsus")
    await asyncio.to_thread(gw.owner.put_bucket_versioning, Bucket="vsus",
                            VersioningConfiguration={"Status": "Enabled"})
    ran = _race_bucket_update(gw, "vsus", lambda: gw.cluster.buckets.update(
        "t", "vsus", object_lock={"enabled": True, "rule": {"mode": "COMPLIANCE", "days": 1}}))
    assert await _run(gw.owner.put_bucket_versioning, Bucket="vsus", VersioningConfiguration={
        "Status": "Suspended"}) == "InvalidBucketState"
    assert ran
    got = await asyncio.to_thread(gw.owner.get_bucket_versioning, Bucket="vsus")
    assert got["Status"] == "Enabled"

    await asyncio.to_thread(gw.owner.create_bucket, Bucket="lcon")
    await asyncio.to_thread(gw.owner.put_bucket_versioning, Bucket="lcon",
                            VersioningConfiguration={"Status": "Enabled"})
    ran = _race_bucket_update(gw, "lcon", lambda: gw.cluster.buckets.update(
        "t", "lcon", versioning="Suspended"))
    assert await _run(gw.owner.put_object_lock_configuration, Bucket="lcon",
                      ObjectLockConfiguration=LOCK_CONF) == "InvalidBucketState"
    assert ran
    assert await _run(gw.owner.get_object_lock_configuration, Bucket="lcon") == (
        "ObjectLockConfigurationNotFoundError")


async def test_a_write_never_replaces_a_locked_null_version(gw: Gateway) -> None:
    """Should a lock-enabled bucket still be suspended (a record written before the check
    above), a PUT over a locked null version is refused and its bytes stay."""
    await asyncio.to_thread(gw.owner.create_bucket, Bucket="nullv")
    await gw.cluster.buckets.update("t", "nullv", versioning="Suspended", object_lock={
        "enabled": True, "rule": {"mode": "COMPLIANCE", "days": 1}})
    await asyncio.to_thread(gw.owner.put_object, Bucket="nullv", Key="k", Body=b"first")
    assert await _run(gw.owner.put_object, Bucket="nullv", Key="k", Body=b"second") == (
        "AccessDenied")
    assert await _run(gw.owner.copy_object, Bucket="nullv", Key="k",
                      CopySource={"Bucket": "nullv", "Key": "k"},
                      MetadataDirective="REPLACE") == "AccessDenied"
    got = await asyncio.to_thread(gw.owner.get_object, Bucket="nullv", Key="k")
    assert (got["VersionId"], got["Body"].read()) == ("null", b"first")


async def _shred(gw: Gateway, bypass: bool = False, wait_s: float = 0.0) -> str | None:
    """Shred tenant "t"; the refusal's message, None when shredded (or scheduled)."""
    try:
        await kr.schedule_shred(gw.cluster.meta, gw.cluster.tenants, "t", wait_s, "test",
                                gw.cluster.objects.lock_clock.now, bypass)
    except ol.TenantLocked as exc:
        return str(exc)
    return None


async def test_shred_refused_under_a_legal_hold_or_governance(gw: Gateway) -> None:
    """Shredding deletes every version: a legal hold refuses it whatever the override, a
    GOVERNANCE retention unless it is bypassed explicitly."""
    vid = await _held(gw.owner, "shred")
    for bypass, wait in ((False, 0.0), (True, 0.0), (True, 3600.0 * 24 * 365 * 200)):
        assert "legal hold" in (await _shred(gw, bypass, wait) or "")
    await asyncio.to_thread(gw.owner.put_object_legal_hold, Bucket="shred", Key="k",
                            VersionId=vid, LegalHold={"Status": "OFF"})
    assert "GOVERNANCE retention until 2100-01-01" in (await _shred(gw) or "")
    assert await gw.cluster.tenants.active("t")
    assert await _shred(gw, bypass=True) is None
    assert not await gw.cluster.tenants.active("t")


async def test_shred_refused_by_a_locked_null_version(gw: Gateway) -> None:
    """A version written before versioning was enabled has only its current record; locked
    later (COMPLIANCE), it refuses the shred like any other."""
    await asyncio.to_thread(gw.owner.create_bucket, Bucket="old")
    await asyncio.to_thread(gw.owner.put_object, Bucket="old", Key="k", Body=b"x")
    await asyncio.to_thread(gw.owner.put_bucket_versioning, Bucket="old",
                            VersioningConfiguration={"Status": "Enabled"})
    await asyncio.to_thread(gw.owner.put_object_lock_configuration, Bucket="old",
                            ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    await asyncio.to_thread(gw.owner.put_object_retention, Bucket="old", Key="k",
                            VersionId="null", Retention={"Mode": "COMPLIANCE",
                                                         "RetainUntilDate": FAR})
    assert "COMPLIANCE retention until 2100-01-01" in (await _shred(gw, bypass=True) or "")
    assert await gw.cluster.tenants.active("t")


async def test_a_due_scheduled_shred_waits_for_locks(gw: Gateway) -> None:
    """A shred scheduled before the versions were locked, now due: the worker postpones it
    past a legal hold (rechecked later) and past GOVERNANCE retention, unless the schedule
    said to bypass it."""
    vid = await _held(gw.owner, "sched")
    meta, worker = gw.cluster.meta, ShredScheduler(gw.cluster.meta, gw.cluster.tenants,
                                                   gw.cluster.objects.lock_clock.now)
    await meta.put(shred_key("t"), pack({"due": 0.0, "by": "test", "bypass_governance": True}))
    before = time.time()
    await worker.step()
    entry = unpack((await meta.get(shred_key("t"))).value)
    assert entry["due"] >= before + HOLD_RECHECK_S and await gw.cluster.tenants.active("t")
    await asyncio.to_thread(gw.owner.put_object_legal_hold, Bucket="sched", Key="k",
                            VersionId=vid, LegalHold={"Status": "OFF"})
    await meta.put(shred_key("t"), pack({"due": 0.0, "by": "test"}))
    await worker.step()
    entry = unpack((await meta.get(shred_key("t"))).value)
    assert entry["due"] == FAR.timestamp() and await gw.cluster.tenants.active("t")
    await meta.put(shred_key("t"), pack({**entry, "due": 0.0, "bypass_governance": True}))
    await worker.step()
    assert not await gw.cluster.tenants.active("t")


async def test_lock_headers_of_a_write_need_their_permissions(gw: Gateway) -> None:
    """A write setting a retention needs s3:PutObjectRetention, one setting a legal hold
    s3:PutObjectLegalHold (AWS); the WRITE grant of a public-read-write bucket carries
    neither, so a stranger cannot plant versions nobody may delete (nor the tenant shred)."""
    await asyncio.to_thread(gw.owner.create_bucket, Bucket="plant",
                            ObjectLockEnabledForBucket=True, ACL="public-read-write")
    await asyncio.to_thread(gw.owner.put_object, Bucket="plant", Key="src", Body=b"x")
    retain = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": FAR}
    hold = {"ObjectLockLegalHoldStatus": "ON"}
    for who in (gw.anonymous, gw.other):
        for lock in (retain, hold):
            assert await _run(who.put_object, Bucket="plant", Key="k", Body=b"x",
                              **lock) == "AccessDenied"
            assert await _run(who.create_multipart_upload, Bucket="plant", Key="k",
                              **lock) == "AccessDenied"
            assert await _run(who.copy_object, Bucket="plant", Key="k", CopySource={
                "Bucket": "plant", "Key": "src"}, **lock) == "AccessDenied"
        assert await _run(who.put_object, Bucket="plant", Key="k", Body=b"x") is None
    assert len(await _versions(gw.owner, "plant")) == 3  # src and the two plain writes
    statement = {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::u:root"},
                 "Action": "s3:PutObjectRetention", "Resource": "arn:aws:s3:::plant/*"}
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObjectLegalHold",
            "Resource": "arn:aws:s3:::plant/*"}
    await asyncio.to_thread(gw.owner.put_bucket_policy, Bucket="plant", Policy=json.dumps(
        {"Version": "2012-10-17", "Statement": [statement, deny]}))
    assert await _run(gw.other.put_object, Bucket="plant", Key="k", Body=b"x",
                      **retain) is None
    assert await _run(gw.other.put_object, Bucket="plant", Key="k", Body=b"x",
                      **hold) == "AccessDenied"
    assert await _run(gw.owner.put_object, Bucket="plant", Key="k", Body=b"x",
                      **hold) == "AccessDenied"
    assert await _run(gw.owner.put_object, Bucket="plant", Key="k", Body=b"x",
                      **retain) is None
