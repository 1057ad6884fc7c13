"""`tessera up --workers 2`: two gateway processes serve S3 on one port (SO_REUSEPORT).

Worker 0 alone runs the admin API and the background workers and sums every worker's
metrics; the other workers exit with it.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster, fetch


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("workers") / "data", up_args=["--workers", "2"])
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _workers(parent: int) -> list[int]:
    """Pids of the gateway worker processes worker 0 (`parent`) started."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"--worker-index" in cmd:
            out.append(int(d))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _metric(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(line_start))


def test_workers_share_the_port_and_metrics_sum(cluster: LocalCluster) -> None:
    assert len(_workers(cluster.pid("gateway"))) == 1
    s3 = cluster.client(max_pool_connections=16)
    bucket = f"w-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    bodies = {f"k{i}": os.urandom(1000 + i) for i in range(48)}
    with ThreadPoolExecutor(8) as pool:  # many connections: the kernel spreads them
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]),
                      bodies.items()))
        got = dict(pool.map(lambda k: (k, s3.get_object(Bucket=bucket, Key=k)["Body"].read()),
                            bodies))
    assert got == bodies
    status, text = fetch(cluster.env["TESSERA_ADMIN_URL"] + "/metrics")
    assert status == 200
    puts = _metric(text.decode(), 'tessera_s3_requests_total{op="PutObject",status="200"}')
    assert puts == len(bodies)  # every worker's count, summed by worker 0


def test_background_workers_run_in_worker_zero_only(cluster: LocalCluster) -> None:
    log = (cluster.data / "logs" / "gateway.log").read_text()
    takers = {line.split("lease taken by ")[1].split(" ")[0]
              for line in log.splitlines() if "lease taken by" in line}
    assert takers and all(t.endswith(f"/{cluster.pid('gateway')}") for t in takers), takers


def test_workers_exit_with_worker_zero(cluster: LocalCluster) -> None:
    parent = cluster.pid("gateway")
    children = _workers(parent)
    assert children
    os.kill(parent, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in children):
        assert time.monotonic() < deadline, "a gateway worker outlived worker 0"
        time.sleep(0.1)
