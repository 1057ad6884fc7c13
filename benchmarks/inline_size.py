#!/usr/bin/env python3
"""Small objects inline in the metadata record vs erasure-coded: where to put the default cut.

    python benchmarks/inline_size.py [--sizes 1024,4096,16384,65536] [--count 300]

Starts two clusters in turn (`tessera up --inline-max-bytes 0`, then the largest size), PUTs
and GETs `--count` objects of each size at `--concurrency` with the lean SigV4 client of
s3_throughput.py, and reports ops/s, p50 and the server CPU per operation: the user + system
CPU time of the gateway and every node process, read from /proc (psutil) before and after
each phase, divided by the operations. Also the metadata file's growth per object. On a
shared machine the figures are indicative; the CPU per op is steadier than the rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from s3_throughput import SigV4Client, _small_phase, percentile  # noqa: E402

from tests.integration.cluster import LocalCluster  # noqa: E402


def server_cpu_s(data: Path) -> float:
    """User + system CPU seconds of the cluster's gateway and node processes so far."""
    total = 0.0
    for pid_file in (data / "run").glob("*.pid"):
        try:
            t = psutil.Process(int(pid_file.read_text())).cpu_times()
        except (psutil.Error, ValueError):
            continue
        total += t.user + t.system
    return total


def meta_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in (data / "meta").glob("*") if p.is_file())


def measure(c: LocalCluster, sizes: list[int], count: int, conc: int) -> list[dict]:
    env = c.env
    client = SigV4Client(c.endpoint, {"access_key": env["AWS_ACCESS_KEY_ID"],
                                      "secret_key": env["AWS_SECRET_ACCESS_KEY"],
                                      "region": env["AWS_DEFAULT_REGION"]})
    s3 = c.client()
    bucket = f"inl-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    out = []
    for size in sizes:
        body = os.urandom(size)
        keys = [f"o/{size}/{i:06d}" for i in range(count)]
        for op in ("PUT", "GET"):
            m0, cpu0 = meta_bytes(c.data), server_cpu_s(c.data)
            secs, lat, errs = asyncio.run(_small_phase(client, bucket, keys, body, op, conc))
            cpu = server_cpu_s(c.data) - cpu0
            ok = len(lat)
            out.append({"size": size, "op": op, "ok": ok, "errors": len(errs),
                        "ops_s": round(ok / secs, 1),
                        "p50_ms": round(percentile(sorted(lat), 50) * 1000, 2),
                        "server_cpu_ms_per_op": round(cpu * 1000 / max(1, ok), 2),
                        "meta_bytes_per_object": round((meta_bytes(c.data) - m0) / max(1, ok))
                        if op == "PUT" else None})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1024,4096,16384,65536")
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    rows = []
    for inline in (0, max(sizes)):
        with tempfile.TemporaryDirectory(prefix="tessera-inline-") as tmp:
            c = LocalCluster(Path(tmp) / "data",
                             up_args=["--inline-max-bytes", str(inline)]).start()
            try:
                for r in measure(c, sizes, a.count, a.concurrency):
                    rows.append({"path": "inline" if inline else "erasure-coded", **r})
            finally:
                c.stop()
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["path", "size", "op", "ok", "errors", "ops_s", "p50_ms", "server_cpu_ms_per_op",
            "meta_bytes_per_object"]
    print("  ".join(cols))
    for r in rows:
        print("  ".join(str(r[k]) for k in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
