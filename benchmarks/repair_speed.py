"""Repair speed: MB/s of shards rebuilt after one node is wiped, and client PUT throughput
before and while repair runs (or, with --drain, MB/s of shards copied off a draining node).

    python benchmarks/repair_speed.py [--objects 24] [--mib 4] [--rate 0] [--drain]

Starts its own `tessera up` in a temporary directory (fast sweep, repair rate --rate MB/s,
0 = unthrottled), writes the objects, kills the node holding most shards, deletes its shard
files, restarts it and times until every lost shard is rebuilt and the queue is empty.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.chaos import FAST_ENV, ChaosCluster  # noqa: E402


def put_rate(s3, bucket: str, prefix: str, n: int, size: int, seed: int) -> float:
    rnd = random.Random(seed)
    bodies = [rnd.randbytes(size) for _ in range(n)]
    t = time.perf_counter()
    for i, b in enumerate(bodies):
        s3.put_object(Bucket=bucket, Key=f"{prefix}{i}", Body=b)
    return n * size / 2**20 / (time.perf_counter() - t)


def cpu_seconds(run_dir: Path) -> dict[str, float]:
    """CPU time (user + system) used so far by each cluster process named in run/*.pid."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for f in run_dir.glob("*.pid"):
        try:
            fields = Path(f"/proc/{int(f.read_text())}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue
        out[f.stem] = (int(fields[11]) + int(fields[12])) / tick
    return out


def drain(c: ChaosCluster, victim: str, held: list[Path]) -> int:
    """Drain `victim` and report the copy rate until it holds no shard file."""
    from gateway.admincli import admin_request

    nbytes = sum(p.stat().st_size for p in held)
    cpu0 = cpu_seconds(c.data / "run")
    t0 = time.perf_counter()
    admin_request("POST", f"/nodes/{victim}/drain", env=c.env)
    while any(p.parts[-5] == victim for p in c.shard_files()):
        if time.perf_counter() - t0 > 600:
            print("drain did not finish within 600 s")
            return 1
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    cpu1 = cpu_seconds(c.data / "run")
    rb = c.status()["rebalance"]
    print(f"drained node {victim}: {len(held)} shards, {nbytes / 2**20:.1f} MiB in {elapsed:.2f} s "
          f"(until its last file was collected): {nbytes / 2**20 / elapsed:.1f} MiB/s "
          f"({nbytes / 1e6 / elapsed:.1f} MB/s); copied {rb.get('copied')}, rebuilt "
          f"{rb.get('rebuilt')}, failed {rb.get('failed')}")
    gw_cpu = cpu1.get("gateway", 0.0) - cpu0.get("gateway", 0.0)
    node_cpu = sum(v - cpu0.get(k, v) for k, v in cpu1.items() if k != "gateway")
    print(f"CPU used meanwhile: gateway {gw_cpu:.1f} s, nodes {node_cpu:.1f} s; machine load "
          f"average {os.getloadavg()[0]:.1f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=24)
    ap.add_argument("--mib", type=int, default=4)
    ap.add_argument("--rate", type=float, default=0.0, help="repair MB/s cap (0 = none)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory (logs)")
    ap.add_argument("--profile", metavar="SVG",
                    help="record the gateway with py-spy (SVG, or collapsed stacks if .txt)")
    ap.add_argument("--drain", action="store_true",
                    help="instead of wiping a node, drain it (`tessera node drain`) and time the "
                         "rebalancer copying its shards away")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tessera-repair-bench-"))
    env = {**os.environ, **FAST_ENV, "TESSERA_REPAIR_RATE_MBPS": str(a.rate),
           "TESSERA_REBALANCE_RATE_MBPS": str(a.rate), "TESSERA_REBALANCE_INTERVAL_S": "0.5",
           "TESSERA_SCRUB_RATE_MBPS": "0"}
    c = ChaosCluster(tmp, env)
    try:
        c.start()
        s3 = c.s3()
        s3.create_bucket(Bucket="bench")
        size = a.mib * 2**20
        base = put_rate(s3, "bench", "obj-", a.objects, size, 1)
        files = {}
        for p in c.shard_files():
            files.setdefault(p.parts[-5], []).append(p)
        victim = max(files, key=lambda n: len(files[n]))
        if a.drain:
            return drain(c, victim, files[victim])
        lost = len(files[victim])
        lost_bytes = sum(p.stat().st_size for p in files[victim])
        c.kill_node(victim)
        for p in files[victim]:
            p.unlink()
        before = int(c.status()["repair"].get("bytes_rebuilt", 0))
        shards_before = int(c.status()["repair"].get("shards_rebuilt", 0))
        spy = None
        if a.profile:
            gw = int((tmp / "run" / "gateway.pid").read_text())
            fmt = "raw" if a.profile.endswith(".txt") else "flamegraph"
            spy = subprocess.Popen(["py-spy", "record", "-p", str(gw), "-o", a.profile,
                                    "--format", fmt, "--idle", "--nonblocking"],
                                   stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        c.restart_node(victim)
        cpu0 = cpu_seconds(tmp / "run")
        t0 = time.perf_counter()
        print(f"node {victim} restarted at {time.time():.3f}")
        rates: list[float] = []
        client = threading.Thread(target=lambda: rates.append(
            put_rate(c.s3(), "bench", "during-", 4, size, 2)))
        client.start()
        t_first = None
        while True:
            st = c.status()["repair"]
            if t_first is None and int(st.get("bytes_rebuilt", 0)) > before:
                t_first = time.perf_counter()
            if int(st.get("shards_rebuilt", 0)) - shards_before >= lost and st["backlog"] == 0:
                break
            if time.perf_counter() - t0 > 600:
                print("repair did not finish within 600 s")
                return 1
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds(tmp / "run")
        t_first = t_first or t0
        client.join()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        during = rates[0] if rates else 0.0
        rebuilt = int(st.get("bytes_rebuilt", 0)) - before
        print(f"wiped node {victim}: {lost} shards, {lost_bytes / 2**20:.1f} MiB")
        print(f"rebuilt {rebuilt / 2**20:.1f} MiB in {elapsed:.2f} s (detection included): "
              f"{rebuilt / 2**20 / elapsed:.1f} MiB/s")
        steady = max(1e-3, time.perf_counter() - t_first)
        print(f"first rebuilt bytes after {t_first - t0:.2f} s; from then on "
              f"{rebuilt / 2**20 / steady:.1f} MiB/s ({rebuilt / 1e6 / steady:.1f} MB/s)")
        gw_cpu = cpu1.get("gateway", 0.0) - cpu0.get("gateway", 0.0)
        node_cpu = sum(v - cpu0.get(k, v) for k, v in cpu1.items() if k != "gateway")
        print(f"CPU used meanwhile (repair + the client PUTs): gateway {gw_cpu:.1f} s, nodes "
              f"{node_cpu:.1f} s over {elapsed:.1f} s wall on {os.cpu_count()} cores; machine "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"client PUT throughput: {base:.1f} MiB/s before, {during:.1f} MiB/s while "
              "repairing")
    finally:
        c.stop()
        if a.keep:
            print(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
