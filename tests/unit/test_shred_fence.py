"""A tenant shred against writes that set a lock while it runs (in-process S3 pipeline,
boto3): the shred fences the tenant before its lock scan, so a PUT, CopyObject or multipart
completion under COMPLIANCE, a retention or a legal hold committed between the scan and the
key destruction is refused (503), never acknowledged and then shredded. The race is forced:
the write is made from inside the scan, after it has read every record."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from storage import keys_rotation as kr
from storage import object_lock as ol
from storage.crypto.keys import FileRootKey
from storage.errors import NotFound, TenantShredding
from storage.keyspace import shred_key
from storage.metadata.sqlite import SqliteStore
from storage.records import pack
from storage.tenants import TenantService
from tests.unit.test_object_lock_attacks import FAR, Gateway, _run, gw  # noqa: F401

LOCK = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": FAR}


async def _bucket(gw: Gateway) -> dict[str, Any]:  # noqa: F811
    """A lock bucket holding an unlocked "k", and an open upload of "m" asking COMPLIANCE."""
    s3 = gw.owner
    await asyncio.to_thread(s3.create_bucket, Bucket="lockb", ObjectLockEnabledForBucket=True)
    put = await asyncio.to_thread(s3.put_object, Bucket="lockb", Key="k", Body=b"x")
    up = await asyncio.to_thread(s3.create_multipart_upload, Bucket="lockb", Key="m", **LOCK)
    part = await asyncio.to_thread(s3.upload_part, Bucket="lockb", Key="m", PartNumber=1,
                                   UploadId=up["UploadId"], Body=b"y")
    return {"vid": put["VersionId"], "upload": up["UploadId"], "etag": part["ETag"]}


WRITES = {
    "put": lambda s3, st: _run(s3.put_object, Bucket="lockb", Key="n", Body=b"z", **LOCK),
    "copy": lambda s3, st: _run(s3.copy_object, Bucket="lockb", Key="c",
                                CopySource={"Bucket": "lockb", "Key": "k"}, **LOCK),
    "complete": lambda s3, st: _run(s3.complete_multipart_upload, Bucket="lockb", Key="m",
                                    UploadId=st["upload"], MultipartUpload={"Parts": [
                                        {"PartNumber": 1, "ETag": st["etag"]}]}),
    "retention": lambda s3, st: _run(s3.put_object_retention, Bucket="lockb", Key="k",
                                     VersionId=st["vid"], Retention={
                                         "Mode": "COMPLIANCE", "RetainUntilDate": FAR}),
    "hold": lambda s3, st: _run(s3.put_object_legal_hold, Bucket="lockb", Key="k",
                                VersionId=st["vid"], LegalHold={"Status": "ON"}),
}


@pytest.mark.parametrize("via", ["here", "elsewhere"])
@pytest.mark.parametrize("write", sorted(WRITES))
async def test_a_lock_set_during_the_shred_scan_is_refused(
        gw: Gateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,  # noqa: F811
        write: str, via: str) -> None:
    """`elsewhere`: the shred runs in another process (its own store on the SQLite file, its
    own caches), while the gateway's caches still hold the tenant as it was before."""
    state = await _bucket(gw)
    meta, tenants = gw.cluster.meta, gw.cluster.tenants
    if via == "elsewhere":
        meta = await SqliteStore.open(tmp_path / "meta.db")
        tenants = TenantService(meta, FileRootKey(tmp_path / "root.key"))
        await tenants.load()
    real = ol.shred_blocker
    answers: list[str | None] = []

    async def scan(meta: Any, tenant: str, now: float, bypass: bool = False) -> Any:
        found = await real(meta, tenant, now, bypass)  # every record read: no lock yet
        if not answers:
            answers.append(await WRITES[write](gw.owner, state))
        return found

    monkeypatch.setattr(ol, "shred_blocker", scan)
    try:
        await kr.shred_now(meta, tenants, "t", gw.cluster.objects.lock_clock.now)
        shredded = True
    except ol.TenantLocked:
        shredded = False
    finally:
        if via == "elsewhere":
            await meta.close()
    assert answers, "the write was not made during the scan"
    assert not (shredded and answers[0] is None), \
        f"the {write} was acknowledged, then shredded with the tenant"
    assert answers[0] == "ServiceUnavailable" and shredded


async def test_a_refused_shred_lets_writes_in_again(gw: Gateway) -> None:  # noqa: F811
    """Locked versions found: the shred is refused and the tenant takes writes again."""
    state = await _bucket(gw)
    assert await WRITES["hold"](gw.owner, state) is None
    with pytest.raises(ol.TenantLocked):
        await kr.shred_now(gw.cluster.meta, gw.cluster.tenants, "t",
                           gw.cluster.objects.lock_clock.now)
    assert (await gw.cluster.tenants.get("t")).state == "active"
    assert await WRITES["put"](gw.owner, state) is None
    assert await WRITES["retention"](gw.owner, state) is None


async def test_a_shred_left_fenced_is_resolved_by_shredding_again(gw: Gateway) -> None:  # noqa: F811
    """A shred that died between its fence and its end leaves the tenant refusing writes;
    the next shred ends that either way (here: a legal hold refuses it, writes come back)."""
    state = await _bucket(gw)
    assert await WRITES["hold"](gw.owner, state) is None
    await gw.cluster.tenants.fence("t")
    assert await WRITES["put"](gw.owner, state) == "ServiceUnavailable"
    assert await asyncio.to_thread(
        lambda: gw.owner.get_object(Bucket="lockb", Key="k")["Body"].read()) == b"x"
    with pytest.raises(ol.TenantLocked):
        await kr.schedule_shred(gw.cluster.meta, gw.cluster.tenants, "t", 0, "test",
                                gw.cluster.objects.lock_clock.now)
    assert (await gw.cluster.tenants.get("t")).state == "active"
    assert await WRITES["put"](gw.owner, state) is None


async def test_a_shred_left_fenced_is_cancelled_without_shredding(gw: Gateway) -> None:  # noqa: F811
    """A scheduled shred that died after its fence leaves the tenant "shredding" with no lock
    to refuse a new shred: `tenant shred --cancel` ends the fence, and rotation and new
    access keys say why they are refused until then (not "shredded")."""
    state = await _bucket(gw)
    meta, tenants = gw.cluster.meta, gw.cluster.tenants
    await meta.put(shred_key("t"), pack({"due": 0.0, "by": "test"}))
    await tenants.fence("t")
    assert await WRITES["put"](gw.owner, state) == "ServiceUnavailable"
    for refused in (kr.rotate(meta, tenants, "t"), tenants.create_key("t")):
        with pytest.raises(TenantShredding, match="in progress; wait or cancel it with "
                           "tessera tenant shred t --cancel"):
            await refused
    await kr.cancel_shred(meta, tenants, "t")
    assert (await tenants.get("t")).state == "active"
    assert await meta.get(shred_key("t")) is None
    assert await WRITES["put"](gw.owner, state) is None
    assert await kr.rotate(meta, tenants, "t") == 2
    assert (await tenants.create_key("t")).tenant == "t"
    await tenants.fence("t")  # an immediate shred that died: nothing scheduled
    await kr.cancel_shred(meta, tenants, "t")
    assert (await tenants.get("t")).state == "active"
    with pytest.raises(NotFound):  # nothing left to cancel
        await kr.cancel_shred(meta, tenants, "t")


async def test_a_cancel_during_a_running_shred_cannot_let_a_lock_be_shredded(
        gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """`--cancel` unfences beside an immediate shred that is still scanning; a legal hold
    set after its scan then commits, so the shred must fence, scan again and be refused."""
    state = await _bucket(gw)
    real = ol.shred_blocker
    answers: list[str | None] = []

    async def scan(meta: Any, tenant: str, now: float, bypass: bool = False) -> Any:
        found = await real(meta, tenant, now, bypass)
        if not answers:
            await kr.cancel_shred(gw.cluster.meta, gw.cluster.tenants, "t")
            answers.append(await WRITES["hold"](gw.owner, state))
        return found

    monkeypatch.setattr(ol, "shred_blocker", scan)
    with pytest.raises(ol.TenantLocked):
        await kr.shred_now(gw.cluster.meta, gw.cluster.tenants, "t",
                           gw.cluster.objects.lock_clock.now)
    assert answers == [None], "the hold was not acknowledged after the cancel"
    assert (await gw.cluster.tenants.get("t")).state == "active"
    assert await asyncio.to_thread(
        lambda: gw.owner.get_object(Bucket="lockb", Key="k")["Body"].read()) == b"x"
