"""The whole gateway's peak memory (every worker process, RSS and PSS) under large PUT/GET.

Why: the aim is a gateway (all its worker processes together) under 300 MiB at the peak of
64 MiB PUTs and GETs at c=4; per-process peaks taken at different moments do not add up to
the gateway's, so this samples every gateway process at the same instants and sums them.

How: `tessera up` in a temp dir (or a running cluster: --data and the AWS_* environment),
then the shared `s3bench.py` (boto3) PUTs `--count` objects and GETs them back at
`--concurrency`; a thread reads /proc/PID/smaps_rollup of the gateway (run/gateway.pid) and
its child workers every `--interval` seconds. Prints per phase: each process's peak RSS /
PSS, the gateway's peak sum, and s3bench's MB/s and server CPU per GB (all servers); then
what the gateway holds `--rest` seconds after the last request.

    python benchmarks/gateway_memory.py [--size 64MiB --count 32 --concurrency 4]
    python benchmarks/gateway_memory.py --data tessera-data      # a running cluster
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
S3BENCH = Path("/work/shared/bench/s3bench.py")
KiB = 1024


def gateway_pids(data: Path) -> list[int]:
    """The gateway's worker 0 (its pid file) and the workers it started."""
    top = int((data / "run" / "gateway.pid").read_text())
    try:
        kids = Path(f"/proc/{top}/task/{top}/children").read_text().split()
    except OSError:
        kids = []
    return [top, *map(int, kids)]


def rss_pss(pid: int) -> tuple[int, int]:
    """Resident and proportional set size of one process in bytes (0, 0 once it is gone)."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * KiB
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * KiB
    except OSError:
        pass
    return rss, pss


class Sampler:
    """Samples every gateway process at once; keeps per-process and summed peaks."""

    def __init__(self, data: Path, interval: float) -> None:
        self.data, self.interval = data, interval
        self.per: dict[int, list[int]] = {}
        self.whole = [0, 0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def reset(self) -> None:
        self.per, self.whole = {}, [0, 0]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            total = [0, 0]
            for pid in gateway_pids(self.data):
                got = rss_pss(pid)
                peak = self.per.setdefault(pid, [0, 0])
                for i in (0, 1):
                    peak[i] = max(peak[i], got[i])
                    total[i] += got[i]
            self.whole = [max(a, b) for a, b in zip(self.whole, total, strict=True)]

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def s3bench(env: dict[str, str], data: Path, op: str, a: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(a.s3bench), "--endpoint", env["AWS_ENDPOINT_URL"],
           "--access-key", env["AWS_ACCESS_KEY_ID"], "--secret-key", env["AWS_SECRET_ACCESS_KEY"],
           "--bucket", "gwmem", "--client", "boto3", "--size", a.size, "--op", op,
           "--concurrency", str(a.concurrency), "--count", str(a.count if op == "put" else
                                                             2 * a.count),
           "--objects", str(max(a.concurrency * 2, 8)), "--duration", str(a.duration),
           "--server-pidfiles", str(data / "run" / "*.pid")]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    return json.loads(out.strip().splitlines()[-1]) if out.strip() else {}


def measure(env: dict[str, str], data: Path, a: argparse.Namespace) -> list[dict]:
    idle = {pid: rss_pss(pid) for pid in gateway_pids(data)}
    rows = [{"phase": "idle", "whole_rss_mib": sum(r for r, _ in idle.values()) / 2**20,
             "whole_pss_mib": sum(p for _, p in idle.values()) / 2**20,
             "per_worker_mib": [[r / 2**20, p / 2**20] for r, p in idle.values()]}]
    with Sampler(data, a.interval) as s:
        for op in ("put", "get"):
            s.reset()
            res = s3bench(env, data, op, a)
            rows.append({"phase": f"{a.size} {op} c={a.concurrency}",
                         "whole_rss_mib": s.whole[0] / 2**20,
                         "whole_pss_mib": s.whole[1] / 2**20,
                         "per_worker_mib": [[r / 2**20, p / 2**20] for r, p in s.per.values()],
                         "MB_per_s": res.get("MB_per_s"), "errors": res.get("errors"),
                         "server_cpu_s_per_GB": res.get("server_cpu_s_per_GB"),
                         "load": os.getloadavg()[0]})
    time.sleep(a.rest)  # what the allocator keeps once the requests stop
    rest = {pid: rss_pss(pid) for pid in gateway_pids(data)}
    rows.append({"phase": f"rest {a.rest:g}s after",
                 "whole_rss_mib": sum(r for r, _ in rest.values()) / 2**20,
                 "whole_pss_mib": sum(p for _, p in rest.values()) / 2**20,
                 "per_worker_mib": [[r / 2**20, p / 2**20] for r, p in rest.values()]})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="64MiB")
    ap.add_argument("--count", type=int, default=32, help="PUTs (GETs: twice as many)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--duration", type=float, default=60.0, help="s3bench's bound per phase")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between samples")
    ap.add_argument("--rest", type=float, default=4.0, help="seconds at rest before the last sample")
    ap.add_argument("--data", type=Path, help="a running cluster's data dir (AWS_* env set)")
    ap.add_argument("--s3bench", type=Path, default=S3BENCH)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.data is not None:
        rows = measure(dict(os.environ), a.data, a)
    else:
        sys.path.insert(0, str(ROOT))
        from tests.integration.cluster import LocalCluster

        with tempfile.TemporaryDirectory(prefix="tessera-gwmem-") as tmp:
            c = LocalCluster(Path(tmp) / "data").start()
            try:
                rows = measure(c.env, c.data, a)
            finally:
                c.stop()
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            per = ", ".join(f"{x:.0f}/{y:.0f}" for x, y in r["per_worker_mib"])
            extra = "" if "MB_per_s" not in r else (
                f"  {r['MB_per_s']} MB/s, {r['server_cpu_s_per_GB']} s/GB server CPU, "
                f"errors {r['errors']}, load {r['load']:.1f}")
            print(f"{r['phase']:16} gateway peak RSS {r['whole_rss_mib']:.0f} MiB, PSS "
                  f"{r['whole_pss_mib']:.0f} MiB (per process RSS/PSS {per}){extra}")
    return 0 if all(not r.get("errors") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
