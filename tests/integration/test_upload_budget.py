"""Many concurrent large uploads against a gateway with a small upload budget
(`[gateway] upload_budget_bytes`, `storage/uploadbudget.py`, `storage/writehold.py`):
every upload completes (a write is admitted with the least it needs and never waits on the
budget holding part of it, so there is no deadlock), the bytes reserved never pass the
budget, and the gateway's peak resident memory grows by about the budget, not by one
footprint per upload (without the budget, 16 uploads of 16 MiB at once raised it by
~300 MiB, with a 64 MiB budget by ~31 MiB). Slow clients hold only their minimum, not the
footprint of a whole write, so they do not keep other uploads out."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from tests.integration.cluster import LocalCluster, fetch, wait_for

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


SLOW = 4  # slow 8 MiB UploadParts at once: 4 minimums fit in 64 MiB, 4 whole footprints not
PART = 8 * MiB


def _slow_part(url: str, body: bytes, go: threading.Event) -> tuple[int, str]:
    """PUT `body` to a presigned UploadPart URL: the first 2 MiB, then (once `go` is set)
    the rest, as a client on a slow link would; (status, ETag)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.putrequest("PUT", f"{u.path}?{u.query}", skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body[:2 * MiB])
        go.wait(60)
        conn.send(body[2 * MiB:])
        r = conn.getresponse()
        r.read()
        return r.status, (r.getheader("ETag") or "").strip('"')
    finally:
        conn.close()


def test_slow_parts_hold_their_minimum_and_keep_no_upload_out(cluster: LocalCluster) -> None:
    s3 = cluster.client()
    s3.create_bucket(Bucket="slowparts")
    up = s3.create_multipart_upload(Bucket="slowparts", Key="big")["UploadId"]
    body = os.urandom(PART)
    url = [s3.generate_presigned_url("upload_part", Params={
        "Bucket": "slowparts", "Key": "big", "UploadId": up, "PartNumber": i + 1})
        for i in range(SLOW)]
    go = threading.Event()
    start = _budget(cluster)
    assert start["in_use"] == 0
    with ThreadPoolExecutor(SLOW) as pool:
        try:
            first = pool.submit(_slow_part, url[0], body, go)
            one = wait_for(lambda: _budget(cluster)["in_use"], "the first part admitted")
            rest = [pool.submit(_slow_part, u, body, go) for u in url[1:]]
            now = wait_for(lambda: (b := _budget(cluster))["waits"] > start["waits"]
                           or b["in_use"] >= SLOW * one and b, "every slow part admitted")
            assert now is not True, "a slow part waited for the budget"
            assert now["in_use"] == SLOW * one  # each holds its minimum while it trickles
            small = os.urandom(MiB)  # and a small upload goes in beside them
            s3.put_object(Bucket="slowparts", Key="small", Body=small)
        finally:
            go.set()
        got = [first.result(), *(f.result() for f in rest)]
    md5 = hashlib.md5(body).hexdigest()
    assert got == [(200, md5)] * SLOW
    assert _budget(cluster)["in_use"] == 0
    s3.complete_multipart_upload(Bucket="slowparts", Key="big", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": md5} for i in range(SLOW)]})
    assert s3.get_object(Bucket="slowparts", Key="big")["Body"].read() == body * SLOW
