#!/usr/bin/env python3
"""S3 throughput of a Tessera cluster: PUT/GET MB/s for large objects, ops/s for small ones.

    python benchmarks/s3_throughput.py                      # starts its own cluster in a temp dir
    python benchmarks/s3_throughput.py --endpoint URL --data DIR   # a running cluster (env creds)

Large and medium objects (64 MiB, 1 MiB) go through boto3 shared by `--threads` threads, the
way applications use it. Small objects (4 KiB) go through a lean aiohttp client with SigV4
header signing and UNSIGNED-PAYLOAD (the approach of /work/shared/bench/s3bench.py), because
on a small machine boto3's own CPU cost caps small-object rates long before the server does.
Every phase reports MB/s, ops/s, p50/p99 latency (time to last byte) and the gateway's peak
RSS, sampled by a thread from `<data>/run/gateway.pid`. Output: a table, or JSON with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops.botoconfig import no_retries  # noqa: E402  (no retries: each error is counted)

KiB, MiB = 1024, 1024 * 1024


@dataclass
class PhaseResult:
    """The figures of one timed phase."""

    name: str
    op: str
    size: int
    count: int
    concurrency: int
    client: str
    seconds: float = 0.0
    ok: int = 0
    errors: int = 0
    mb_per_s: float = 0.0
    ops_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    gateway_peak_rss_mib: float | None = None
    first_error: str | None = None
    latencies: list[float] = field(default_factory=list, repr=False)

    def finish(self, seconds: float, latencies: list[float], errors: list[str]) -> None:
        self.seconds = round(seconds, 3)
        self.ok = len(latencies)
        self.errors = len(errors)
        self.first_error = errors[0][:300] if errors else None
        self.mb_per_s = round(self.ok * self.size / seconds / 1e6, 2) if seconds else 0.0
        self.ops_per_s = round(self.ok / seconds, 1) if seconds else 0.0
        lat = sorted(latencies)
        self.p50_ms = round(percentile(lat, 50) * 1000, 2)
        self.p99_ms = round(percentile(lat, 99) * 1000, 2)

    def as_json(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("latencies")
        return d


def percentile(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not sorted_vals:
        return 0.0
    rank = max(1, -(-len(sorted_vals) * p // 100))
    return sorted_vals[int(min(rank, len(sorted_vals))) - 1]


# ---------------------------------------------------------------------- gateway memory


class RssSampler:
    """Samples the RSS of one process in a thread; `peak_since_mark` gives a phase's peak."""

    def __init__(self, pid: int | None, interval_s: float = 0.05) -> None:
        self._proc = psutil.Process(pid) if pid else None
        self._interval = interval_s
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def _sample(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(psutil.Error):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def mark(self) -> None:
        self._sample()
        self._peak = 0

    def peak_since_mark_mib(self) -> float | None:
        if self._proc is None:
            return None
        self._sample()
        return round(self._peak / MiB, 1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------ boto3 client


def boto3_client(endpoint: str, creds: dict[str, str], pool: int):
    import boto3

    cfg = no_retries(signature_version="s3v4",
                     s3={"addressing_style": "path", "payload_signing_enabled": False},
                     max_pool_connections=max(10, pool), read_timeout=300,
                     request_checksum_calculation="when_required",
                     response_checksum_validation="when_required")
    return boto3.client("s3", endpoint_url=endpoint, region_name=creds["region"],
                        aws_access_key_id=creds["access_key"],
                        aws_secret_access_key=creds["secret_key"], config=cfg)


def run_threads(keys: list[str], threads: int, op: Callable[[str], None],
                ) -> tuple[float, list[float], list[str]]:
    """Run `op` over keys with a pool of threads; (wall seconds, latencies, errors)."""
    it: Iterator[str] = iter(keys)
    lock = threading.Lock()
    lat: list[float] = []
    errs: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                key = next(it, None)
            if key is None:
                return
            t0 = time.perf_counter()
            try:
                op(key)
            except Exception as exc:  # noqa: BLE001 - counted and reported, run continues
                with lock:
                    errs.append(repr(exc))
                continue
            with lock:
                lat.append(time.perf_counter() - t0)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - t0, lat, errs


def boto3_phases(s3, bucket: str, size: int, count: int, threads: int, prefix: str,
                 rss: RssSampler) -> list[PhaseResult]:
    """PUT `count` objects of `size` bytes, then GET each once; check one body fully."""
    body = os.urandom(size)
    keys = [f"{prefix}/{size}/{i:06d}" for i in range(count)]

    def put(key: str) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    def get(key: str) -> None:
        r = s3.get_object(Bucket=bucket, Key=key)
        n = sum(len(c) for c in r["Body"].iter_chunks(MiB))
        if n != size:
            raise OSError(f"short read {n}/{size}")

    out = []
    for op, fn in (("PUT", put), ("GET", get)):
        res = PhaseResult(f"{op} {human(size)}", op, size, count, threads, "boto3")
        rss.mark()
        res.finish(*run_threads(keys, threads, fn))
        res.gateway_peak_rss_mib = rss.peak_since_mark_mib()
        out.append(res)
    got = s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    if hashlib.sha256(got).digest() != hashlib.sha256(body).digest():
        out[-1].errors += 1
        out[-1].first_error = "GET returned different bytes than were PUT"
    return out


# ---------------------------------------------------------------------- aiohttp client


class SigV4Client:
    """A minimal path-style S3 client: SigV4 header auth with UNSIGNED-PAYLOAD, one session.

    Signing follows /work/shared/bench/s3bench.py: one HMAC chain per day, one per request.
    """

    def __init__(self, endpoint: str, creds: dict[str, str]) -> None:
        u = urlsplit(endpoint.rstrip("/"))
        self.origin = f"{u.scheme}://{u.netloc}"
        self.host = u.netloc
        self.ak, self.sk, self.region = creds["access_key"], creds["secret_key"], creds["region"]
        self._day_key: tuple[str, bytes] = ("", b"")

    def _signing_key(self, day: str) -> bytes:
        if self._day_key[0] != day:
            k = ("AWS4" + self.sk).encode()
            for part in (day, self.region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._day_key = (day, k)
        return self._day_key[1]

    def headers(self, method: str, path: str) -> dict[str, str]:
        now = datetime.now(UTC)
        amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload = "UNSIGNED-PAYLOAD"
        signed = "host;x-amz-content-sha256;x-amz-date"
        canon = "\n".join([method, path, "", f"host:{self.host}",
                           f"x-amz-content-sha256:{payload}", f"x-amz-date:{amz}", "",
                           signed, payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope,
                         hashlib.sha256(canon.encode()).hexdigest()])
        sig = hmac.new(self._signing_key(day), sts.encode(), hashlib.sha256).hexdigest()
        return {"x-amz-date": amz, "x-amz-content-sha256": payload,
                "Authorization": f"AWS4-HMAC-SHA256 Credential={self.ak}/{scope}, "
                                 f"SignedHeaders={signed}, Signature={sig}"}


async def _small_phase(client: SigV4Client, bucket: str, keys: list[str], body: bytes,
                       op: str, concurrency: int) -> tuple[float, list[float], list[str]]:
    import aiohttp
    import yarl

    it = iter(keys)
    lat: list[float] = []
    errs: list[str] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        for key in it:
            path = "/" + quote(bucket, safe="") + "/" + quote(key, safe="/-_.~")
            url = yarl.URL(client.origin + path, encoded=True)
            t0 = time.perf_counter()
            try:
                async with session.request(op, url, headers=client.headers(op, path),
                                           data=body if op == "PUT" else None) as r:
                    data = await r.read()
                    if r.status != 200:
                        raise OSError(f"HTTP {r.status}: {data[:200]!r}")
                    if op == "GET" and len(data) != len(body):
                        raise OSError(f"short read {len(data)}/{len(body)}")
            except Exception as exc:  # noqa: BLE001 - counted and reported, run continues
                errs.append(repr(exc))
                continue
            lat.append(time.perf_counter() - t0)

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, auto_decompress=False) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - t0, lat, errs


def small_phases(endpoint: str, creds: dict[str, str], bucket: str, size: int, count: int,
                 concurrency: int, prefix: str, rss: RssSampler) -> list[PhaseResult]:
    client = SigV4Client(endpoint, creds)
    body = os.urandom(size)
    keys = [f"{prefix}/{size}/{i:06d}" for i in range(count)]
    out = []
    for op in ("PUT", "GET"):
        res = PhaseResult(f"{op} {human(size)}", op, size, count, concurrency, "aiohttp")
        rss.mark()
        res.finish(*asyncio.run(_small_phase(client, bucket, keys, body, op, concurrency)))
        res.gateway_peak_rss_mib = rss.peak_since_mark_mib()
        out.append(res)
    return out


# ----------------------------------------------------------------------------- driver


def human(n: int) -> str:
    for unit, f in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB)):
        if n >= f and n % f == 0:
            return f"{n // f} {unit}"
    return f"{n} B"


def table(results: list[PhaseResult]) -> str:
    cols = ["phase", "client", "count", "conc", "seconds", "MB/s", "ops/s", "p50 ms", "p99 ms",
            "errors", "gw peak RSS MiB"]
    rows = [[r.name, r.client, str(r.ok), str(r.concurrency), f"{r.seconds:.2f}",
             f"{r.mb_per_s:.1f}", f"{r.ops_per_s:.1f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}",
             str(r.errors), "-" if r.gateway_peak_rss_mib is None else
             f"{r.gateway_peak_rss_mib:.0f}"] for r in results]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", help="S3 endpoint of a running cluster (credentials from "
                   "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); default: start one")
    p.add_argument("--data", type=Path, help="data dir of a running cluster (for gateway RSS)")
    p.add_argument("--threads", type=int, default=4, help="boto3 threads (64 MiB and 1 MiB)")
    p.add_argument("--concurrency", type=int, default=16, help="in-flight 4 KiB requests")
    p.add_argument("--large-count", type=int, default=8, help="64 MiB objects")
    p.add_argument("--medium-count", type=int, default=64, help="1 MiB objects")
    p.add_argument("--small-count", type=int, default=2000, help="4 KiB objects")
    p.add_argument("--bucket", default="", help="bucket (default: a new one per run)")
    p.add_argument("--keep", action="store_true", help="keep the objects (running cluster)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = p.parse_args(argv)
    if min(a.threads, a.concurrency) < 1:
        p.error("--threads and --concurrency must be >= 1")
    return a


def run(a: argparse.Namespace, endpoint: str, creds: dict[str, str], data: Path | None,
        ) -> list[PhaseResult]:
    pid_file = data / "run" / "gateway.pid" if data else None
    pid = int(pid_file.read_text()) if pid_file and pid_file.exists() else None
    rss = RssSampler(pid).start()
    s3 = boto3_client(endpoint, creds, a.threads)
    bucket = a.bucket or f"bench-{uuid.uuid4().hex[:8]}"
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)
    prefix = f"s3tp-{time.strftime('%Y%m%dT%H%M%S')}"
    results: list[PhaseResult] = []
    try:
        for size, count in ((64 * MiB, a.large_count), (MiB, a.medium_count)):
            if count:
                results += boto3_phases(s3, bucket, size, count, a.threads, prefix, rss)
        if a.small_count:
            results += small_phases(endpoint, creds, bucket, 4 * KiB, a.small_count,
                                    a.concurrency, prefix, rss)
    finally:
        rss.stop()
        if a.endpoint and not a.keep:
            _cleanup(s3, bucket, prefix, a.threads, drop_bucket=not a.bucket)
    return results


def _cleanup(s3, bucket: str, prefix: str, threads: int, drop_bucket: bool) -> None:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    run_threads(keys, max(threads, 8), lambda k: s3.delete_object(Bucket=bucket, Key=k))
    if drop_bucket:
        with contextlib.suppress(Exception):
            s3.delete_bucket(Bucket=bucket)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.endpoint:
        try:
            creds = {"access_key": os.environ["AWS_ACCESS_KEY_ID"],
                     "secret_key": os.environ["AWS_SECRET_ACCESS_KEY"],
                     "region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
        except KeyError as exc:
            print(f"s3_throughput: --endpoint needs {exc.args[0]} in the environment",
                  file=sys.stderr)
            return 2
        results = run(a, a.endpoint, creds, a.data)
    else:
        from tests.integration.cluster import LocalCluster

        with tempfile.TemporaryDirectory(prefix="tessera-bench-") as tmp:
            cluster = LocalCluster(Path(tmp) / "data").start()
            try:
                env = cluster.env
                creds = {"access_key": env["AWS_ACCESS_KEY_ID"],
                         "secret_key": env["AWS_SECRET_ACCESS_KEY"],
                         "region": env["AWS_DEFAULT_REGION"]}
                results = run(a, cluster.endpoint, creds, cluster.data)
            finally:
                cluster.stop()
    if a.json:
        print(json.dumps([r.as_json() for r in results], indent=2))
    else:
        print(table(results))
        for r in results:
            if r.first_error:
                print(f"{r.name}: {r.errors} error(s), first: {r.first_error}")
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
