"""The shred fence (tenant state "shredding") against the rest of the system.

- A rewrap pass that runs while a shred scans must not end the tenant's rewrap: the shred
  may be refused (a lock) and the tenant keeps its data keys wrapped under the old KEK.
- Writes that compare the tenant record's revision (PUT, tagging, retention, multipart
  completion) must not fail while other tenant-record writes (identity, public access
  block) commit meanwhile from another process: they retry on a changed revision.
- The hourly recheck of a due scheduled shred held up by a legal hold must not refuse the
  tenant's writes (503) for the length of a lock scan each time: the hold is still there."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from storage import keys_rotation as kr
from storage import object_lock as ol
from storage.crypto.keys import FileRootKey
from storage.keyspace import rewrap_key, shred_key
from storage.metadata.sqlite import SqliteStore
from storage.records import pack
from storage.tenants import TenantService
from storage.workers.keys import Rewrapper, ShredScheduler
from tests.sim.test_rewrap_rotation_race import _until_idle
from tests.sim.test_sim_repair import SEGMENT, Sim
from tests.unit.test_object_lock_attacks import FAR, Gateway, _held, _run, gw  # noqa: F401


async def test_a_rewrap_pass_during_a_refused_shred_keeps_the_rewrap(tmp_path: Path) -> None:
    s = Sim(tmp_path, 5)
    await s.open(tmp_path)
    try:
        await s.put("o", SEGMENT + 3)
        r = Rewrapper(s.meta, s.tenants)
        version = await kr.rotate(s.meta, s.tenants, "t")
        await s.tenants.fence("t")  # a shred scans for locks ...
        await _until_idle(r)  # ... while a rewrap pass runs (another gateway's worker)
        await s.tenants.unfence("t")  # ... and is refused: the tenant is active again
        await _until_idle(r)
        assert (await s.objects.head(s.bucket, "o")).kek_version == version, \
            "the rewrap was ended while the tenant was fenced, with 'o' still on KEK v1"
        assert await s.meta.get(rewrap_key("t")) is None
    finally:
        await s.close()


async def test_writes_survive_tenant_record_updates_elsewhere(
        gw: Gateway, tmp_path: Path) -> None:  # noqa: F811
    """Before each write another process rewrites the tenant record (identity, public access
    block), so the gateway's cached revision is stale at every commit: each must retry."""
    s3 = gw.owner
    await asyncio.to_thread(s3.create_bucket, Bucket="lockb2", ObjectLockEnabledForBucket=True)
    meta = await SqliteStore.open(tmp_path / "meta.db")
    other = TenantService(meta, FileRootKey(tmp_path / "root.key"))
    await other.load()
    updates = 0

    async def update() -> None:
        nonlocal updates
        updates += 1
        if updates % 2:
            await other.set_identity("t", display_name=f"n{updates}")
        else:
            await other.set_public_access_block("t", {"BlockPublicAcls": bool(updates % 4)})

    answers: list[tuple[str, str | None]] = []
    try:
        for i in range(3):
            await update()
            answers.append(("put", await _run(s3.put_object, Bucket="lockb2", Key=f"k{i}",
                                              Body=b"x" * 4096)))
            vid = (await asyncio.to_thread(s3.head_object, Bucket="lockb2",
                                           Key=f"k{i}"))["VersionId"]
            await update()
            answers.append(("tag", await _run(s3.put_object_tagging, Bucket="lockb2",
                                              Key=f"k{i}", VersionId=vid, Tagging={"TagSet": [
                                                  {"Key": "a", "Value": str(i)}]})))
            await update()
            answers.append(("retention", await _run(
                s3.put_object_retention, Bucket="lockb2", Key=f"k{i}", VersionId=vid,
                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": FAR})))
            up = await asyncio.to_thread(s3.create_multipart_upload, Bucket="lockb2",
                                         Key=f"m{i}")
            part = await asyncio.to_thread(s3.upload_part, Bucket="lockb2", Key=f"m{i}",
                                           PartNumber=1, UploadId=up["UploadId"], Body=b"y")
            await update()
            answers.append(("complete", await _run(
                s3.complete_multipart_upload, Bucket="lockb2", Key=f"m{i}",
                UploadId=up["UploadId"], MultipartUpload={"Parts": [
                    {"PartNumber": 1, "ETag": part["ETag"]}]})))
    finally:
        await meta.close()
    assert [a for a in answers if a[1] is not None] == []


async def test_a_scheduled_shred_rechecking_a_hold_lets_writes_in(
        gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    await _held(gw.owner, "sched")
    meta = gw.cluster.meta
    await meta.put(shred_key("t"), pack({"due": 0.0, "by": "test", "bypass_governance": False}))
    real = ol.shred_blocker
    answers: list[str | None] = []

    async def scan(meta: Any, tenant: str, now: float, bypass: bool = False) -> Any:
        if not answers:  # a client's PUT while the worker looks at the locks again
            answers.append(await _run(gw.owner.put_object, Bucket="sched", Key="n", Body=b"z"))
        return await real(meta, tenant, now, bypass)

    monkeypatch.setattr(ol, "shred_blocker", scan)
    await ShredScheduler(meta, gw.cluster.tenants, gw.cluster.objects.lock_clock.now).step()
    assert await gw.cluster.tenants.active("t")
    assert answers == [None], "a write was refused by a shred that a legal hold postpones"
