"""Gateway memory while a 2 GiB object is PUT and read back: streaming, never buffering.

Why: the gateway must keep a bounded working set whatever the object size (the target is
under 300 MiB RSS for a 2 GiB PUT and GET).

How: `tessera up` in a temp dir (or a running cluster with --endpoint and --data); the
client streams the object from a generator (deterministic pseudo-random bytes made on read,
never held whole) with boto3's `upload_fileobj` (multipart, `--part-size`, `--threads` in
flight), then reads it back as one GET streamed in 1 MiB chunks and compares SHA-256. A
thread samples the gateway's RSS (pid from `<data>/run/gateway.pid`) every 50 ms.

    python benchmarks/large_object_memory.py [--size 2GiB] [--part-size 8MiB] [--threads 4]
    python benchmarks/large_object_memory.py --endpoint "$AWS_ENDPOINT_URL" --data tessera-data
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.botoconfig import no_retries  # noqa: E402  (no retries: each error is counted)

MiB = 1024 * 1024
BUCKET = "large-object-bench"
KEY = "big/object.bin"


def parse_size(s: str) -> int:
    units = {"KIB": 1024, "MIB": MiB, "GIB": 1024 * MiB, "B": 1}
    u = s.upper()
    for suffix, mult in units.items():
        if u.endswith(suffix):
            return int(float(u[: -len(suffix)]) * mult)
    return int(s)


class GeneratedStream(io.RawIOBase):
    """`size` bytes of a repeating pseudo-random pattern, produced as they are read.

    Each 1 MiB block is the seeded pattern rotated by the block number, so no two blocks
    are equal (no accidental dedup or compression) and nothing is kept but one pattern.
    """

    def __init__(self, size: int, seed: int = 2026) -> None:
        self.size, self.pos = size, 0
        pattern = random.Random(seed).randbytes(MiB)
        self._twice = memoryview(pattern + pattern)  # any 1 MiB rotation is one slice
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        n = min(len(buf), self.size - self.pos)
        out = 0
        while out < n:
            block, off = divmod(self.pos, MiB)
            rot = (block * 7919) % MiB
            take = min(n - out, MiB - off)
            start = (off + rot) % MiB
            chunk = self._twice[start:start + take]
            buf[out:out + take] = chunk
            self.sha.update(chunk)
            out += take
            self.pos += take
        return out


class RssSampler:
    """Peak RSS of one process, sampled every `interval_s` by a thread."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.rss())
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(endpoint: str, env: dict[str, str], data: Path, size: int, part: int,
        threads: int) -> dict:
    import boto3
    from boto3.s3.transfer import TransferConfig

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                      region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
                      config=no_retries(max_pool_connections=threads, read_timeout=300))
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    pid = int((data / "run" / "gateway.pid").read_text())
    out: dict = {"size_mib": size // MiB, "part_size_mib": part // MiB, "threads": threads}
    out["gateway_rss_idle_mib"] = round(psutil.Process(pid).memory_info().rss / MiB, 1)

    src = GeneratedStream(size)
    cfg = TransferConfig(multipart_threshold=part, multipart_chunksize=part,
                         max_concurrency=threads, use_threads=True)
    with RssSampler(pid) as rss:
        t0 = time.perf_counter()
        try:  # one attempt per request: a failed part is an error, not a hidden retry
            s3.upload_fileobj(io.BufferedReader(src, buffer_size=MiB), BUCKET, KEY, Config=cfg)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            return out | {"errors": 1, "first_error": str(exc)[:300], "data_ok": False}
        put_s = time.perf_counter() - t0
    out |= {"put_mb_s": round(size / MiB / put_s, 1), "put_s": round(put_s, 1),
            "put_gateway_peak_rss_mib": round(rss.peak / MiB, 1), "put_samples": rss.samples}

    got = hashlib.sha256()
    n = 0
    with RssSampler(pid) as rss:
        t0 = time.perf_counter()
        try:
            body = s3.get_object(Bucket=BUCKET, Key=KEY)["Body"]
            for chunk in body.iter_chunks(MiB):
                got.update(chunk)
                n += len(chunk)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            out |= {"errors": 1, "first_error": str(exc)[:300]}
        get_s = time.perf_counter() - t0
    out |= {"get_mb_s": round(size / MiB / get_s, 1), "get_s": round(get_s, 1),
            "get_gateway_peak_rss_mib": round(rss.peak / MiB, 1), "get_samples": rss.samples,
            "data_ok": n == size and got.digest() == src.sha.digest()}
    out.setdefault("errors", 0)
    s3.delete_object(Bucket=BUCKET, Key=KEY)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="2GiB")
    ap.add_argument("--part-size", default="8MiB")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--endpoint", help="a running cluster (keys from AWS_* in the environment)")
    ap.add_argument("--data", type=Path, help="its data directory (for run/gateway.pid)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    size, part = parse_size(a.size), parse_size(a.part_size)
    if a.endpoint:
        if a.data is None:
            print("large_object_memory: --endpoint needs --data", file=sys.stderr)
            return 2
        r = run(a.endpoint, dict(os.environ), a.data, size, part, a.threads)
    else:
        from tests.integration.cluster import LocalCluster

        with tempfile.TemporaryDirectory(prefix="tessera-bigobj-") as tmp:
            c = LocalCluster(Path(tmp) / "data").start()
            try:
                r = run(c.endpoint, c.env, c.data, size, part, a.threads)
            finally:
                c.stop()
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        for k, v in r.items():
            print(f"{k:28} {v}")
    return 0 if r["data_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
