"""Many concurrent large uploads against a gateway with a small upload budget
(`[gateway] upload_budget_bytes`, `storage/uploadbudget.py`): every upload completes
(a write reserves its whole footprint before reading its body and never waits holding
part of it, so there is no deadlock), the bytes reserved never pass the budget, and the
gateway's peak resident memory grows by about the budget, not by one footprint per upload
(without the budget, 16 uploads of 16 MiB at once raised it by ~300 MiB, with a 64 MiB
budget by ~31 MiB)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.cluster import LocalCluster, fetch

MiB = 1024 * 1024
BUDGET_MB = 64
UPLOADS = 16
SIZE = 16 * MiB  # >= 8 MiB: coded in 4 MiB segments, ~40 MiB footprint each
SLACK = 64 * MiB  # receive buffers, wide reads, allocator rounding


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("budget") / "data", up_args=["--workers", "1"])
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TESSERA_UPLOAD_BUDGET_MB", str(BUDGET_MB))
            c.start()
        yield c
    finally:
        c.stop()


def _peak_rss(pid: int) -> int:
    text = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) * 1024  # type: ignore[union-attr]


def _budget(c: LocalCluster) -> dict[str, float]:
    status, text = fetch(c.env["TESSERA_ADMIN_URL"] + "/metrics")
    assert status == 200
    out = {m[0]: float(m[1]) for m in re.findall(
        r'^tessera_upload_budget_bytes\{state="(\w+)"\} (\S+)$', text.decode(), re.M)}
    waits = re.search(r"^tessera_upload_budget_waits_total (\S+)$", text.decode(), re.M)
    assert waits is not None
    out["waits"] = float(waits.group(1))
    return out


def test_concurrent_large_uploads_all_finish_within_the_budget(cluster: LocalCluster) -> None:
    s3 = cluster.client(max_pool_connections=UPLOADS)
    s3.create_bucket(Bucket="budget")
    body = os.urandom(SIZE)
    md5 = hashlib.md5(body).hexdigest()
    s3.put_object(Bucket="budget", Key="warm", Body=body)  # pools and buffers exist first
    gateway = cluster.pid("gateway")
    before = _peak_rss(gateway)

    def put(i: int) -> str:
        return s3.put_object(Bucket="budget", Key=f"o{i}", Body=body)["ETag"].strip('"')

    with ThreadPoolExecutor(UPLOADS) as pool:
        etags = list(pool.map(put, range(UPLOADS)))
    grown = _peak_rss(gateway) - before
    assert etags == [md5] * UPLOADS
    b = _budget(cluster)
    assert b["limit"] == BUDGET_MB * MiB
    assert 0 < b["peak"] <= b["limit"] and b["in_use"] == 0
    assert b["waits"] >= 1  # the uploads did queue for it
    assert grown < BUDGET_MB * MiB + SLACK, f"gateway peak RSS grew {grown / MiB:.0f} MiB"
    got = s3.get_object(Bucket="budget", Key=f"o{UPLOADS - 1}")["Body"].read()
    assert hashlib.md5(got).hexdigest() == md5
