"""`tessera up --metadata etcd --workers 2`: worker 1's commits go through worker 0's etcd
batcher (storage/metadata/etcd_share.py), so concurrent PUTs of both workers share Txns;
with worker 1 killed mid-load, worker 0 keeps serving."""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.cluster import LocalCluster, fetch
from tests.integration.test_gateway_workers import _metric, _workers

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("etcdshare") / "data", metadata="etcd",
                     up_args=["--workers", "2"])
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TESSERA_ACCEPT_GRACE_S", "60")  # a loaded box never breaks the turns
            c.start()
        yield c
    finally:
        c.stop()


def _counts(c: LocalCluster) -> tuple[float, float]:
    status, text = fetch(c.env["TESSERA_ADMIN_URL"] + "/metrics")
    assert status == 200
    body = text.decode()
    return (_metric(body, "tessera_etcd_commits_forwarded_total"),
            _metric(body, "tessera_etcd_commits_direct_total"))


def test_worker_1_commits_through_worker_0_and_worker_0_outlives_it(
        cluster: LocalCluster) -> None:
    s3 = cluster.client(max_pool_connections=16)
    bucket = f"s-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    forwarded, direct = _counts(cluster)
    bodies = {f"k{i}": os.urandom(4096) for i in range(64)}
    with ThreadPoolExecutor(16) as pool:  # 16 connections: each worker holds half
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]),
                      bodies.items()))
    now = _counts(cluster)
    assert now[0] > forwarded and now[1] == direct  # worker 1's PUTs, each through worker 0
    [worker1] = _workers(cluster.pid("gateway"))
    os.kill(worker1, signal.SIGKILL)
    more = {f"m{i}": os.urandom(4096) for i in range(16)}
    fresh = cluster.client()  # new connections: worker 0 takes them (the balancer passes
    for k, b in more.items():  # over the dead worker's slot)
        fresh.put_object(Bucket=bucket, Key=k, Body=b)
    for k, b in {**bodies, **more}.items():
        assert fresh.get_object(Bucket=bucket, Key=k)["Body"].read() == b
