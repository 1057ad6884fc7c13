"""`tessera up --metadata etcd --workers 2`: worker 1's commits go through worker 0's etcd
batcher (storage/metadata/etcd_share.py), so concurrent PUTs of both workers share Txns;
with the etcd leader stopped while batches are in flight, every acknowledged PUT reads back
and every failed one is absent or whole; with worker 1 killed mid-load, worker 0 keeps
serving. One cluster for the module, its tests in order (the last kills worker 1)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from tests.integration.cluster import ETCD_HOSTS, LocalCluster, fetch, wait_for
from tests.integration.test_gateway_workers import _metric, _workers

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")


@pytest.fixture(scope="module")
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


def _leader(c: LocalCluster) -> str:
    """The etcd member that says it leads."""
    for i, host in enumerate(ETCD_HOSTS, start=1):
        ask = urllib.request.Request(f"http://{host}:{c.etcd_port}/v3/maintenance/status",
                                     data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(ask, timeout=2) as r:
                status = json.loads(r.read())
        except OSError:
            continue
        if status.get("leader") == status["header"]["member_id"]:
            return f"etcd-az{i}"
    raise AssertionError("no etcd member says it leads")


class Putters:
    """Threads PUTting fresh keys (each a new body) until stopped; what each PUT was told."""

    def __init__(self, c: LocalCluster, bucket: str, n: int) -> None:
        self.s3 = boto3.client(  # no retries: every answer is seen; 60 s > any bound inside
            "s3", endpoint_url=c.endpoint, aws_access_key_id=c.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=c.env["AWS_SECRET_ACCESS_KEY"],
            region_name=c.env["AWS_DEFAULT_REGION"],
            config=BotoConfig(retries={"total_max_attempts": 1}, read_timeout=60,
                              max_pool_connections=n))
        self.bucket = bucket
        self.told: dict[str, tuple[bytes, str]] = {}  # key -> (body, "ok" or the error)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.pool = ThreadPoolExecutor(n)
        self.running = [self.pool.submit(self._put, i) for i in range(n)]

    def _put(self, n: int) -> None:
        i = 0
        while not self.done.is_set():
            key, i = f"p{n}-{i}", i + 1
            body = os.urandom(1024 if i % 2 else 96 * 1024)  # inline, and in shards
            try:
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
                outcome = "ok"
            except (ClientError, BotoCoreError) as exc:
                outcome = str(exc)
            with self.lock:
                self.told[key] = (body, outcome)

    def oks(self) -> int:
        with self.lock:
            return sum(o == "ok" for _, o in self.told.values())

    def stop(self) -> dict[str, tuple[bytes, str]]:
        self.done.set()
        self.pool.shutdown()
        for f in self.running:
            f.result()
        return dict(self.told)


def test_puts_while_the_etcd_leader_stops_mid_batch(cluster: LocalCluster) -> None:
    """8 clients PUT through both workers (worker 1's commits batched by worker 0) while the
    etcd leader is stopped (SIGSTOP: requests sent to it wait, unanswered, to their
    deadline) and resumed: a PUT told 200 reads back; one told an error reads back whole or
    is absent; nothing else is listed."""
    bucket = f"l-{uuid.uuid4().hex[:8]}"
    cluster.client().create_bucket(Bucket=bucket)
    leader = cluster.pid(_leader(cluster))
    forwarded, _ = _counts(cluster)
    putters = Putters(cluster, bucket, 8)
    try:
        wait_for(lambda: putters.oks() >= 16, "PUTs before the stop")
        os.kill(leader, signal.SIGSTOP)
        try:
            before = putters.oks()
            wait_for(lambda: putters.oks() >= before + 16, "PUTs with the leader stopped")
        finally:
            os.kill(leader, signal.SIGCONT)
        resumed = putters.oks()
        wait_for(lambda: putters.oks() >= resumed + 8, "PUTs after the resume")
    finally:
        told = putters.stop()
    assert _counts(cluster)[0] > forwarded  # worker 1's commits went through worker 0
    s3 = cluster.client()
    applied = absent = 0
    for key, (body, outcome) in told.items():
        try:
            got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            assert outcome != "ok", f"{key}: acknowledged, then {exc}"
            assert exc.response["Error"]["Code"] == "NoSuchKey", (key, exc)
            absent += 1
            continue
        assert got == body, f"{key} ({outcome}): another body"
        applied += outcome != "ok"
    print(f"{len(told)} PUTs; failed: {absent} absent, {applied} applied")
    listed = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
              for o in page.get("Contents", [])]
    assert set(listed) <= set(told)


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
