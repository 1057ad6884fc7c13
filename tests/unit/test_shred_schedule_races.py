"""The shred scheduler against a cancel during its lock scan, and RestrictPublicBuckets against a public Allow of the governance bypass (in-process S3 pipeline, boto3)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from storage import keys_rotation as kr
from storage import object_lock as ol
from storage.keyspace import shred_key
from storage.records import pack
from storage.tenants import TenantService
from storage.workers.keys import ShredScheduler
from tests.unit.test_object_lock_attacks import FAR, Gateway, _held, _locked, _run, gw  # noqa: F401


def _cancel_during_scan(monkeypatch: pytest.MonkeyPatch, tenants: TenantService) -> list[bool]:
    """The operator's `tenant shred --cancel` commits while the worker scans for locks."""
    real = ol.shred_blocker
    ran: list[bool] = []

    async def scan(meta: Any, tenant: str, now: float, bypass: bool = False) -> Any:
        if not ran:
            ran.append(True)
            await kr.cancel_shred(meta, tenants, tenant)
        return await real(meta, tenant, now, bypass)

    monkeypatch.setattr(ol, "shred_blocker", scan)
    return ran


async def test_a_cancelled_shred_stays_cancelled_while_held(
        gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    await _held(gw.owner, "held")
    meta = gw.cluster.meta
    await meta.put(shred_key("t"), pack({"due": 0.0, "by": "test"}))
    ran = _cancel_during_scan(monkeypatch, gw.cluster.tenants)
    await ShredScheduler(meta, gw.cluster.tenants, gw.cluster.objects.lock_clock.now).step()
    assert ran
    assert await meta.get(shred_key("t")) is None, "the worker re-scheduled a cancelled shred"


async def test_a_cancelled_shred_is_not_run(
        gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    meta = gw.cluster.meta
    await meta.put(shred_key("t"), pack({"due": 0.0, "by": "test"}))
    ran = _cancel_during_scan(monkeypatch, gw.cluster.tenants)
    await ShredScheduler(meta, gw.cluster.tenants, gw.cluster.objects.lock_clock.now).step()
    assert ran
    assert await gw.cluster.tenants.active("t"), "the tenant was shredded after the cancel"


async def test_owner_lock_headers_under_a_bucket_policy(gw: Gateway) -> None:  # noqa: F811
    """The bucket owner's normal flows keep working when its bucket has a policy."""
    await asyncio.to_thread(gw.owner.create_bucket, Bucket="own",
                            ObjectLockEnabledForBucket=True)
    other = {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::u:root"},
             "Action": "s3:GetObject", "Resource": "arn:aws:s3:::own/*"}
    await asyncio.to_thread(gw.owner.put_bucket_policy, Bucket="own", Policy=json.dumps(
        {"Version": "2012-10-17", "Statement": [other]}))
    retain = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": FAR,
              "ObjectLockLegalHoldStatus": "ON"}
    assert await _run(gw.owner.put_object, Bucket="own", Key="a", Body=b"x", **retain) is None
    up = await asyncio.to_thread(gw.owner.create_multipart_upload, Bucket="own", Key="m",
                                 **retain)
    part = await asyncio.to_thread(gw.owner.upload_part, Bucket="own", Key="m", PartNumber=1,
                                   UploadId=up["UploadId"], Body=b"y")
    assert await _run(gw.owner.complete_multipart_upload, Bucket="own", Key="m",
                      UploadId=up["UploadId"], MultipartUpload={"Parts": [
                          {"PartNumber": 1, "ETag": part["ETag"]}]}) is None
    assert await _run(gw.owner.copy_object, Bucket="own", Key="c",
                      CopySource={"Bucket": "own", "Key": "a"}, **retain) is None
    for key in ("a", "m", "c"):
        got = await asyncio.to_thread(gw.owner.head_object, Bucket="own", Key=key)
        assert (got["ObjectLockMode"], got["ObjectLockLegalHoldStatus"]) == ("COMPLIANCE", "ON")
    # a second write to a key creates a new version, never refused by commit's lock check
    assert await _run(gw.owner.put_object, Bucket="own", Key="a", Body=b"z") is None
    got = await asyncio.to_thread(gw.owner.list_object_versions, Bucket="own", Prefix="a")
    assert len(got["Versions"]) == 2


async def test_restrict_public_buckets_drops_a_public_bypass(gw: Gateway) -> None:  # noqa: F811
    """A public policy Allow of s3:BypassGovernanceRetention counts for nobody under
    RestrictPublicBuckets (planting `public_allows=True` in holds_permission passed every
    other Object Lock test)."""
    public = {"Effect": "Allow", "Principal": "*", "Action": "s3:BypassGovernanceRetention",
              "Resource": "arn:aws:s3:::rpb/*"}
    vid = await _locked(gw.owner, "rpb", ACL="public-read-write")
    await asyncio.to_thread(gw.owner.put_bucket_policy, Bucket="rpb", Policy=json.dumps(
        {"Version": "2012-10-17", "Statement": [public]}))
    await asyncio.to_thread(gw.owner.put_public_access_block, Bucket="rpb",
                            PublicAccessBlockConfiguration={"RestrictPublicBuckets": True})
    assert await _run(gw.anonymous.delete_object, Bucket="rpb", Key="k", VersionId=vid,
                      BypassGovernanceRetention=True) == "AccessDenied"
    await asyncio.to_thread(gw.owner.delete_public_access_block, Bucket="rpb")
    assert await _run(gw.anonymous.delete_object, Bucket="rpb", Key="k", VersionId=vid,
                      BypassGovernanceRetention=True) is None  # the public Allow holds now
