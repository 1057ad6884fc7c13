"""etcd past its backend quota (its NOSPACE alarm, as on a full disk) refuses every write:
the gateway answers 503 ServiceUnavailable (SDKs retry), as for a full SQLite disk, not 500
InternalError with a traceback per request."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gateway.s3.errors_map import to_s3_error
from ops.etcdcluster import ETCD_HOSTS, EtcdCluster, default_members
from storage.errors import StorageFull
from storage.metadata.etcd import EtcdStore
from tests.integration.cluster import free_port

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="needs the etcd binary")

QUOTA = 2 * 1024 * 1024  # bytes: reached after a few dozen 60 KB values


class SmallEtcd(EtcdCluster):
    def _args(self, m):  # type: ignore[no-untyped-def]
        return [*super()._args(m), "--quota-backend-bytes", str(QUOTA)]


async def test_a_write_past_etcds_quota_is_storage_full_and_a_503(tmp_path: Path) -> None:
    host = ETCD_HOSTS[0]
    client = free_port([host])
    peer = free_port([host])
    while peer == client:
        peer = free_port([host])
    cluster = SmallEtcd(tmp_path / "data", default_members(client, peer, (host,)),
                        tmp_path / "logs").start()
    try:
        store = await EtcdStore.open(cluster.endpoints)
        try:
            with pytest.raises(StorageFull) as refused:
                for i in range(2 * QUOTA // 60_000):
                    await store.put(b"k%05d" % i, os.urandom(60_000))
            err = to_s3_error(refused.value, "b", "k")
            assert (err.code, err.status) == ("ServiceUnavailable", 503)
            assert await store.get(b"k00000") is not None  # reads go on
        finally:
            await store.close()
    finally:
        cluster.stop()
