"""ListObjectsV2 over a bucket of N keys (default 1,000,000), page after page, through the gateway.

Why: listing must cost the same on page 1 and on page 1,000 (a range scan that resumes at the
continuation token, never a rescan from the start).

How: `tessera up` in a temp dir; the bucket is created over S3; the cluster is stopped and N
zero-byte objects are written through the real `ObjectService.put` path (a 0-byte object has
no shards, so this is the metadata commit of a PUT, without HTTP), concurrently so SQLite
group-commits them; the cluster is started again and the bucket is listed 1,000 keys a page
with a small aiohttp SigV4 client (boto3's XML parsing would dominate the timings). Printed:
fill rate, pages/s, p50/p99 ms per page overall and per tenth of the listing, and the ratio of
the last tenth's p50 to the first tenth's.

    python benchmarks/list_bench.py [--keys 1000000] [--page 1000] [--json]
        [--port P] [--keep DIR]

`--port P` puts the gateway on P, the admin API on P+1 and the nodes on P+2 (else free
ports); `--keep DIR` keeps the filled cluster in DIR (and reuses it, unfilled again, when DIR
already holds one: for idle-cost measurements at scale). The gateway's process tree
(`run/gateway.pid` and its workers) is sampled from /proc: CPU-ms per page and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "list-bench"
FILL_CONCURRENCY = 512
_TOKEN = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")


def key_name(i: int) -> str:
    """Keys spread over 100 'directories', as real buckets are."""
    return f"dir{i % 100:02d}/obj-{i:08d}"


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def fill(config: Path, access_key: str, n: int) -> float:
    """Write `n` zero-byte objects through ObjectService.put; returns objects per second."""
    sys.path.insert(0, str(ROOT))
    from storage.cluster import Cluster
    from storage.config import load_config
    from storage.objects import PutOptions

    cl = await Cluster.open(load_config(config), probe=False)
    try:
        cred = await cl.tenants.credential(access_key)
        assert cred is not None, "access key not found"
        bucket = await cl.buckets.get(cred.tenant, BUCKET)
        nxt = iter(range(n))
        done = 0
        t0 = time.perf_counter()

        async def worker() -> None:
            nonlocal done
            for i in nxt:
                await cl.objects.put(bucket, key_name(i), _empty(), PutOptions())
                done += 1
                if done % 50_000 == 0:
                    rate = done / (time.perf_counter() - t0)
                    print(f"  filled {done:,} ({rate:,.0f}/s)", file=sys.stderr, flush=True)

        await asyncio.gather(*(worker() for _ in range(FILL_CONCURRENCY)))
        return n / (time.perf_counter() - t0)
    finally:
        await cl.close()


class Signer:
    """SigV4 header signing of a GET with a query string (UNSIGNED-PAYLOAD)."""

    def __init__(self, endpoint: str, ak: str, sk: str, region: str) -> None:
        self.origin = endpoint.rstrip("/")
        self.host = urlsplit(self.origin).netloc
        self.ak, self.sk, self.region = ak, sk, region

    def sign(self, path: str, query: dict[str, str]) -> tuple[str, dict[str, str]]:
        now = datetime.now(UTC)
        amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        qs = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                      for k, v in sorted(query.items()))
        payload = "UNSIGNED-PAYLOAD"
        signed = "host;x-amz-content-sha256;x-amz-date"
        canon = "\n".join(["GET", path, qs, f"host:{self.host}",
                           f"x-amz-content-sha256:{payload}", f"x-amz-date:{amz}", "",
                           signed, payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope,
                         hashlib.sha256(canon.encode()).hexdigest()])
        k = ("AWS4" + self.sk).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
        return f"{self.origin}{path}?{qs}", {
            "x-amz-date": amz, "x-amz-content-sha256": payload,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={self.ak}/{scope}, "
                             f"SignedHeaders={signed}, Signature={sig}"}


async def list_all(signer: Signer, page: int) -> tuple[list[float], int, float]:
    """List the bucket page by page; returns per-page seconds, keys seen, total seconds."""
    import aiohttp
    import yarl

    lat: list[float] = []
    keys = 0
    token: str | None = None
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        t0 = time.perf_counter()
        while True:
            q = {"list-type": "2", "max-keys": str(page)}
            if token:
                q["continuation-token"] = token
            url, headers = signer.sign(f"/{BUCKET}", q)
            t = time.perf_counter()
            async with session.get(yarl.URL(url, encoded=True), headers=headers) as r:
                body = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {body[:300]!r}")
            lat.append(time.perf_counter() - t)
            keys += body.count(b"<Key>")
            m = _TOKEN.search(body)
            if m is None:
                break
            token = m.group(1).decode()
        return lat, keys, time.perf_counter() - t0


def gateway_pids(data: Path) -> list[int]:
    """The gateway process and its children (the workers), from run/gateway.pid and /proc."""
    root = int((data / "run" / "gateway.pid").read_text())
    pids, todo = [root], [root]
    while todo:
        p = todo.pop()
        for t in Path(f"/proc/{p}/task").glob("*/children"):
            kids = [int(x) for x in t.read_text().split()]
            pids += kids
            todo += kids
    return pids


def cpu_s(pids: list[int]) -> float:
    """user+system CPU-seconds of `pids` (children not yet reaped are not counted)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
    return total / tick


def rss_mib(pids: list[int], key: str = "VmRSS") -> float:
    """Sum of `key` (VmRSS, VmHWM) over `pids`, MiB."""
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
    return total / 1024


def pct(vals: list[float], p: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] * 1000


def report(n: int, fill_rate: float, lat: list[float], keys: int, total: float,
           gw: dict[str, float]) -> dict:
    tenth = max(1, len(lat) // 10)
    deciles = [lat[i * tenth:(i + 1) * tenth] for i in range(10) if lat[i * tenth:(i + 1) * tenth]]
    return {
        "keys": n, "keys_listed": keys, "pages": len(lat),
        "fill_objects_per_s": round(fill_rate),
        "pages_per_s": round(len(lat) / total, 1), "keys_per_s": round(keys / total),
        "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
        "first_page_ms": round(lat[0] * 1000, 2), "last_page_ms": round(lat[-1] * 1000, 2),
        "decile_p50_ms": [round(pct(d, 50), 2) for d in deciles],
        "decile_p99_ms": [round(pct(d, 99), 2) for d in deciles],
        "last_over_first_decile_p50": round(pct(deciles[-1], 50) / pct(deciles[0], 50), 2),
        "gateway_cpu_ms_per_page": round(gw["cpu_s"] * 1000 / len(lat), 2),
        "gateway_rss_mib_before": round(gw["rss_before"], 1),
        "gateway_rss_mib_after": round(gw["rss_after"], 1),
        "gateway_peak_rss_mib": round(gw["hwm"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--page", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--port", type=int, default=0, help="gateway port (admin P+1, nodes P+2)")
    ap.add_argument("--keep", type=Path, help="keep (or reuse) the filled cluster here")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.integration.cluster import LocalCluster

    with tempfile.TemporaryDirectory(prefix="tessera-listbench-") as tmp:
        data = a.keep or Path(tmp) / "data"
        reuse = (data / "tessera.toml").exists()
        ports = (a.port, a.port + 1, a.port + 2) if a.port else (0, 0, 0)
        c = LocalCluster(data, *ports).start()
        try:
            rate = 0.0
            if not reuse:
                c.client().create_bucket(Bucket=BUCKET)
                c.stop()
                print(f"filling {a.keys:,} zero-byte objects...", file=sys.stderr, flush=True)
                rate = asyncio.run(fill(c.data / "tessera.toml", c.env["AWS_ACCESS_KEY_ID"],
                                        a.keys))
                c.start()
            signer = Signer(c.endpoint, c.env["AWS_ACCESS_KEY_ID"],
                            c.env["AWS_SECRET_ACCESS_KEY"], c.env["AWS_DEFAULT_REGION"])
            pids = gateway_pids(c.data)
            gw = {"rss_before": rss_mib(pids), "cpu_s": cpu_s(pids)}
            lat, keys, total = asyncio.run(list_all(signer, a.page))
            gw.update(cpu_s=cpu_s(pids) - gw["cpu_s"], rss_after=rss_mib(pids),
                      hwm=rss_mib(pids, "VmHWM"))
        finally:
            c.stop()
    r = report(a.keys, rate, lat, keys, total, gw)
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        for k, v in r.items():
            print(f"{k:28} {v}")
    return 0 if keys == a.keys else 1


if __name__ == "__main__":
    sys.exit(main())
