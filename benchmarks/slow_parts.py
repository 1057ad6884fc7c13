"""Slow multipart clients against the upload budget (review13c's case, issue 17).

Why: a budget that reserved each write's whole footprint at admission let a few slow
clients hold memory they were not using, and the others got 503 SlowDown after 30 s
(at 128 MiB, 4 of 10 slow 8 MiB UploadParts). This reproduces it: `tessera up` in a temp
dir with `--budget-mb`, then `--parts` presigned UploadParts of `--size` MiB sent at once,
each at `--rate` MB/s as a slow link would, and prints each part's status and time.

    python benchmarks/slow_parts.py [--parts 10 --size 8 --rate 0.25 --budget-mb 128]
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
CHUNK = 64 * 1024


def send_part(url: str, body: bytes, rate: float) -> tuple[int | str, float]:
    """PUT `body` to a presigned URL at `rate` bytes/s: (status or error, seconds)."""
    u = urlsplit(url)
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    try:
        conn.putrequest("PUT", f"{u.path}?{u.query}", skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        for i in range(0, len(body), CHUNK):
            conn.send(body[i:i + CHUNK])
            ahead = (i + CHUNK) / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)  # the client's link speed, not a synchronisation
        r = conn.getresponse()
        r.read()
        return r.status, time.monotonic() - t0
    except OSError as exc:
        return type(exc).__name__, time.monotonic() - t0
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=10)
    ap.add_argument("--size", type=int, default=8, help="MiB per part")
    ap.add_argument("--rate", type=float, default=0.25, help="MB/s per client")
    ap.add_argument("--budget-mb", type=int, default=128, help="[gateway] upload budget")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.integration.cluster import LocalCluster

    os.environ["TESSERA_UPLOAD_BUDGET_MB"] = str(a.budget_mb)
    with tempfile.TemporaryDirectory(prefix="tessera-slowparts-") as tmp:
        c = LocalCluster(Path(tmp) / "data").start()
        try:
            s3 = c.client()
            s3.create_bucket(Bucket="slow")
            up = s3.create_multipart_upload(Bucket="slow", Key="k")["UploadId"]
            body = os.urandom(a.size * MiB)
            urls = [s3.generate_presigned_url("upload_part", ExpiresIn=3600, Params={
                "Bucket": "slow", "Key": "k", "UploadId": up, "PartNumber": i + 1})
                for i in range(a.parts)]
            with ThreadPoolExecutor(a.parts) as pool:
                res = list(pool.map(lambda u: send_part(u, body, a.rate * 1e6), urls))
        finally:
            c.stop()
    for status, took in res:
        print(f"{status} {took:.1f}s")
    ok = sum(1 for s, _ in res if s == 200)
    print(f"{ok} of {a.parts} got 200 (load {os.getloadavg()[0]:.1f})")
    return 0 if ok == a.parts else 1


if __name__ == "__main__":
    sys.exit(main())
