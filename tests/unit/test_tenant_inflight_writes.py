"""tenant22: a write under a grant, authenticated before its writer's `tenant delete`
began, does not commit after the delete returned: the commit compares the writer's tenant
record (active), as it compares the bucket owner's. Without that compare the object would
be owned by the deleted name, and pass to a tenant made later under it (`--reuse-name`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from storage import tenant_delete
from storage.cluster import Cluster
from storage.keyspace import object_key
from storage.testing.simnodes import SimNodes
from tests.inproc import no_locks, served_s3, sim_cluster_s3, sim_config


def _grant(s3: Any, *writers: str) -> None:
    """Bucket "bkt" (tenant t's) lets each of `writers` put objects."""
    s3.put_bucket_policy(Bucket="bkt", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": [f"arn:aws:iam::{w}:root" for w in writers]},
         "Action": "s3:PutObject", "Resource": "arn:aws:s3:::bkt/*"}]}))


def _delete_at_commit(c: Cluster, name: str, key: str) -> None:
    """Right before the transaction that commits `key` (its checks made), `tenant delete
    name` runs to its end (as the admin API does: keys revoked, then the record goes): the
    delete returns while the write is in flight."""
    plain = c.meta.txn_or_read

    async def txn_or_read(txn: Any, reads: Any) -> Any:
        if object_key("bkt", key) in txn.puts:
            c.meta.txn_or_read = plain  # type: ignore[method-assign]

            async def revoke() -> None:
                for k in await c.tenants.list_keys(name):
                    await c.tenants.revoke_key(k.access_key)
            await tenant_delete.delete(c.meta, name, None, revoke, no_locks)
        return await plain(txn, reads)
    c.meta.txn_or_read = txn_or_read  # type: ignore[method-assign]


async def test_a_write_in_flight_at_its_writers_delete_does_not_commit(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, 0)
    async with sim_cluster_s3(tmp_path, cfg, SimNodes(list(cfg.nodes)), "bkt") as (c, t3):
        await asyncio.to_thread(_grant, t3, "uput", "umpu")
        for name in ("uput", "umpu"):
            await c.tenants.create(name)
            cred = await c.tenants.create_key(name)
            async with served_s3(c, cfg, cred.access_key, cred.secret_key) as u3:
                await asyncio.to_thread(u3.put_object, Bucket="bkt", Key=f"{name}-ok",
                                        Body=b"granted")  # the grant works
                if name == "umpu":
                    up = await asyncio.to_thread(u3.create_multipart_upload, Bucket="bkt",
                                                 Key=f"{name}-late")
                    part = await asyncio.to_thread(u3.upload_part, Bucket="bkt",
                                                   Key=f"{name}-late", UploadId=up["UploadId"],
                                                   PartNumber=1, Body=b"part")
                _delete_at_commit(c, name, f"{name}-late")
                with pytest.raises(ClientError) as err:
                    if name == "uput":
                        await asyncio.to_thread(u3.put_object, Bucket="bkt",
                                                Key=f"{name}-late", Body=b"late")
                    else:
                        await asyncio.to_thread(
                            u3.complete_multipart_upload, Bucket="bkt", Key=f"{name}-late",
                            UploadId=up["UploadId"], MultipartUpload={
                                "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
                assert err.value.response["Error"]["Code"] == "AccessDenied", err.value
            assert await c.tenants.list_keys(name) == []  # deleted
            with pytest.raises(ClientError) as gone:
                await asyncio.to_thread(t3.head_object, Bucket="bkt", Key=f"{name}-late")
            assert gone.value.response["Error"]["Code"] == "404"
