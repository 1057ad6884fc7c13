"""review22c: since tenant22 an SSE-KMS object tenant u writes into tenant t's bucket under a
grant is sealed with u's own KMS key, so destroying u's keys destroys it. A shred is
refused while any version it would destroy is under COMPLIANCE retention or a legal hold
(`object_lock.shred_blocker`); that scan reads only u's own buckets, so shredding u (no
bypass asked) destroys a COMPLIANCE-locked version in t's bucket. `tenant delete u` deleted
u's KMS keys at once with no lock check at all (mend22c: both refused, TenantLocked)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from storage import keys_rotation
from storage.object_lock import TenantLocked, shred_blocker
from storage.testing.simnodes import SimNodes
from tests.inproc import served_s3, sim_config, wired_cluster
from tests.unit.test_tenant_forgery import _client


async def test_a_writers_shred_spares_its_locked_versions_in_others_buckets(
        tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, 0)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes)), tenant="t") as c:
        kt = await c.tenants.create_key("t")
        await c.tenants.create("u")
        ku = await c.tenants.create_key("u")
        async with served_s3(c, cfg, kt.access_key, kt.secret_key) as t:
            u = _client(t.meta.endpoint_url, ku.access_key, ku.secret_key)

            def setup() -> str:
                t.create_bucket(Bucket="vault", ObjectLockEnabledForBucket=True)
                t.put_object_lock_configuration(Bucket="vault", ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {
                        "Mode": "COMPLIANCE", "Days": 30}}})
                t.put_bucket_policy(Bucket="vault", Policy=json.dumps({
                    "Version": "2012-10-17", "Statement": [{
                        "Effect": "Allow", "Principal": {"AWS": "u"},
                        "Action": ["s3:GetObject", "s3:PutObject"],
                        "Resource": "arn:aws:s3:::vault/*"}]}))
                put = u.put_object(Bucket="vault", Key="record", Body=b"kept 30 days",
                                   ServerSideEncryption="aws:kms", ChecksumAlgorithm="SHA256")
                assert u.get_object(Bucket="vault", Key="record")["Body"].read() == \
                    b"kept 30 days"
                return str(put["SSEKMSKeyId"])
            arn = await asyncio.to_thread(setup)
            assert arn.split(":")[4] == "u"  # sealed with u's key (tenant22)
            now = c.objects.lock_clock.now
            with pytest.raises(TenantLocked):  # the locked version dies with u's keys
                await keys_rotation.shred_now(c.meta, c.tenants, "u", now)
            with pytest.raises(TenantLocked):  # and with u's KMS keys, deleted at once
                await c.objects.kms.delete_tenant("u", None, None, now)
            await c.tenants.create("w")  # no version sealed with w's keys: not blocked
            assert await shred_blocker(c.meta, "w", now) is None
            assert (await c.tenants.get("u")).state == "active"  # both refusals undone
            body = await asyncio.to_thread(
                lambda: u.get_object(Bucket="vault", Key="record")["Body"].read())
            assert body == b"kept 30 days"
