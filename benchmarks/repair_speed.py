"""Repair speed, idle and under client load, and what repair costs client PUTs.

    python benchmarks/repair_speed.py [--objects 48] [--mib 4] [--rate R] [--busy-rate B]
    python benchmarks/repair_speed.py --drain      # the rebalancer draining a node instead
    python benchmarks/repair_speed.py --drain --busy  # ...while one client PUTs all along
    python benchmarks/repair_speed.py --idle-only --profile out.txt   # py-spy, all processes

Starts its own `tessera up` in a temporary directory (fast sweep, the server's default repair
rates unless --rate / --busy-rate are given, MiB/s, 0 = no cap) and writes the objects with
sequential PUTs (client MB/s with no repair). Then, twice, it kills the node holding most
shards, deletes its shard files, restarts it and times until every lost shard is rebuilt and
the queue is empty: first with no client traffic (repair MB/s when idle), then while one
client keeps PUTting objects (client MB/s during repair, and repair MB/s meanwhile).

Progress is read from the metadata file (SQLite, read-only) rather than the admin status
page, so the poll costs the servers nothing; the node scrub and the gateway's deep scrub
are off, so the CPU figures (user + system from /proc, per rebuilt MiB) are repair's own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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

from ops.chaos_cluster import FAST_ENV, ChaosCluster  # noqa: E402


class Progress:
    """The repair counters and queue length, read straight from the SQLite metadata file."""

    def __init__(self, data: Path) -> None:
        import sqlite3

        from storage.keyspace import REPAIR, space, system_key
        self._db = sqlite3.connect(f"file:{data / 'meta' / 'tessera.db'}?mode=ro", uri=True)
        self._stats = system_key("repair")
        self._queue = space(REPAIR)

    def __call__(self) -> dict:
        from storage.records import unpack
        row = self._db.execute("SELECT v FROM kv WHERE k=?", (self._stats,)).fetchone()
        st = dict(unpack(row[0])) if row else {}
        st["backlog"] = self._db.execute("SELECT count(*) FROM kv WHERE k>=? AND k<?",
                                         self._queue).fetchone()[0]
        return st


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


def drain(c: ChaosCluster, victim: str, held: list[Path], busy_size: int = 0) -> int:
    """Drain `victim` and report the copy rate until it holds no shard file (with
    `busy_size`, while one client PUTs objects of that size all along)."""
    from ops.admincli import admin_request

    nbytes = sum(p.stat().st_size for p in held)
    client = Client(c, busy_size) if busy_size else None
    if client is not None:
        client.start()
        while len(client.ends) < 2:  # clients active before the drain starts
            time.sleep(0.05)
        held = [p for p in c.shard_files() if p.parts[-5] == victim]  # the client's too
        nbytes = sum(p.stat().st_size for p in held)
    cpu0 = cpu_seconds(c.data / "run")
    t0, wall0 = time.perf_counter(), time.time()
    admin_request("POST", f"/nodes/{victim}/drain", env=c.env)
    while any(p.parts[-5] == victim for p in c.shard_files()):
        if time.perf_counter() - t0 > 900:
            print("drain did not finish within 900 s")
            return 1
        time.sleep(0.05)
    elapsed, wall1 = time.perf_counter() - t0, time.time()
    cpu1 = cpu_seconds(c.data / "run")
    rb = c.status()["rebalance"]
    if client is not None:
        client.stop.set()
        client.join()
        lat = sorted(d for e, d in zip(client.ends, client.took, strict=True)
                     if wall0 <= e <= wall1)
        pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else \
            (lambda q: 0.0)
        print(f"client PUTs during the drain: {client.rate_between(wall0, wall1):.1f} MiB/s, "
              f"{len(lat)} PUTs, latency p50 {pct(0.5):.0f} ms, p90 {pct(0.9):.0f} ms, "
              f"max {pct(1.0):.0f} ms; pacing at the end: {rb.get('pacing')}")
    print(f"drained node {victim}: {len(held)} shards, {nbytes / 2**20:.1f} MiB in {elapsed:.2f} s "
          f"(until its last file was collected): {nbytes / 2**20 / elapsed:.1f} MiB/s "
          f"({nbytes / 1e6 / elapsed:.1f} MB/s); copied {rb.get('copied')}, rebuilt "
          f"{rb.get('rebuilt')}, failed {rb.get('failed')}")
    gw_cpu = cpu1.get("gateway", 0.0) - cpu0.get("gateway", 0.0)
    node_cpu = sum(v - cpu0.get(k, v) for k, v in cpu1.items() if k != "gateway")
    print(f"CPU used meanwhile: gateway {gw_cpu:.1f} s, nodes {node_cpu:.1f} s; machine load "
          f"average {os.getloadavg()[0]:.1f}")
    return 0


class Client(threading.Thread):
    """Sequential PUTs of `size` bytes until stopped; records when each one ended."""

    def __init__(self, c: ChaosCluster, size: int) -> None:
        super().__init__(daemon=True)
        self.s3 = c.s3()
        rnd = random.Random(2)
        self.bodies = [rnd.randbytes(size) for _ in range(4)]
        self.stop = threading.Event()
        self.started = 0.0
        self.ends: list[float] = []
        self.took: list[float] = []  # each PUT's latency, seconds

    def run(self) -> None:
        self.started = time.time()
        i = 0
        while not self.stop.is_set():
            t = time.time()
            self.s3.put_object(Bucket="bench", Key=f"during-{i}", Body=self.bodies[i % 4])
            self.ends.append(time.time())
            self.took.append(self.ends[-1] - t)
            i += 1

    def rate_between(self, t0: float, t1: float) -> float:
        """MiB/s of the PUTs that ended within [t0, t1] (epoch seconds)."""
        done = [t for t in self.ends if t0 <= t <= t1]
        return len(done) * len(self.bodies[0]) / 2**20 / (t1 - t0) if t1 > t0 else 0.0


def commit_times(tmp: Path, since: float) -> list[float]:
    """When the gateway logged each stripe repair commit since `since` (epoch seconds)."""
    out = []
    for line in (tmp / "logs" / "gateway.log").read_text(errors="replace").splitlines():
        if '"tessera.repair"' not in line or "rebuilt shards" not in line:
            continue
        with contextlib.suppress(ValueError):
            ts = float(json.loads(line)["ts"])
            if ts >= since:
                out.append(ts)
    return sorted(out)


def repair_once(c: ChaosCluster, tmp: Path, skip: set[str], size: int | None,
                profile: str | None) -> dict | None:
    """Wipe the node holding most shards (not in `skip`) and time its repair.

    With `size`, a client PUTs objects of that size all along. None when it times out.
    """
    files: dict[str, list[Path]] = {}
    for p in c.shard_files():
        files.setdefault(p.parts[-5], []).append(p)
    victim = max((n for n in files if n not in skip), key=lambda n: len(files[n]))
    lost = len(files[victim])
    lost_bytes = sum(p.stat().st_size for p in files[victim])
    c.kill_node(victim)
    for p in files[victim]:
        p.unlink()
    progress = Progress(tmp)
    st0 = progress()
    before, shards_before = int(st0.get("bytes_rebuilt", 0)), int(st0.get("shards_rebuilt", 0))
    spy = None
    if profile:
        gw = int((tmp / "run" / "gateway.pid").read_text())
        fmt = "raw" if profile.endswith(".txt") else "flamegraph"
        up = c.up.pid if c.up is not None else gw  # the gateway and the nodes `up` started
        spy = subprocess.Popen(["py-spy", "record", "-p", str(up), "--subprocesses", "-o",
                                profile, "--format", fmt, "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall0 = time.time()
    c.restart_node(victim)
    client = Client(c, size) if size else None
    if client is not None:
        client.start()
    cpu0 = cpu_seconds(tmp / "run")
    t0 = time.perf_counter()
    mid: tuple[dict[str, float], int] | None = None  # CPU and bytes at the first rebuilt shard
    while True:
        st = progress()
        if mid is None and int(st.get("shards_rebuilt", 0)) > shards_before:
            mid = (cpu_seconds(tmp / "run"), int(st.get("bytes_rebuilt", 0)) - before)
        if int(st.get("shards_rebuilt", 0)) - shards_before >= lost and st["backlog"] == 0:
            break
        if time.perf_counter() - t0 > 600:
            print("repair did not finish within 600 s")
            return None
        time.sleep(0.05)
    t_done, wall_done = time.perf_counter(), time.time()
    cpu1 = cpu_seconds(tmp / "run")
    if client is not None:
        client.stop.set()
        client.join()
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    rebuilt = int(st.get("bytes_rebuilt", 0)) - before
    commits = commit_times(tmp, wall0)
    # Steady rate: the bytes of all stripes but the first, between the first and last commit.
    span = commits[-1] - commits[0] if len(commits) > 1 else 0.0
    steady = rebuilt * (len(commits) - 1) / len(commits) / span if span > 0 else 0.0
    cpu_mid, rebuilt_mid = mid if mid is not None else (cpu0, 0)
    return {"victim": victim, "lost": lost, "lost_mib": lost_bytes / 2**20,
            # from the first rebuilt shard on: without the detection phase's idle CPU
            "steady_mib": (rebuilt - rebuilt_mid) / 2**20,
            "steady_gw_cpu": cpu1.get("gateway", 0.0) - cpu_mid.get("gateway", 0.0),
            "steady_node_cpu": sum(v - cpu_mid.get(k, v) for k, v in cpu1.items()
                                   if k != "gateway"),
            "rebuilt_mib": rebuilt / 2**20, "elapsed": t_done - t0,
            "first": commits[0] - wall0 if commits else 0.0, "stripes": len(commits),
            "steady_mb_s": steady / 1e6,
            "gw_cpu": cpu1.get("gateway", 0.0) - cpu0.get("gateway", 0.0),
            "node_cpu": sum(v - cpu0.get(k, v) for k, v in cpu1.items() if k != "gateway"),
            "client_mib_s": client.rate_between(client.started, wall_done) if client else None,
            "client_rebuilding_mib_s": client.rate_between(commits[0], commits[-1])
            if client and len(commits) > 1 else None,
            "client_puts": len([t for t in client.ends if t <= wall_done]) if client else 0}


def report(label: str, r: dict) -> None:
    print(f"{label}: wiped node {r['victim']} ({r['lost']} shards, {r['lost_mib']:.1f} MiB); "
          f"rebuilt {r['rebuilt_mib']:.1f} MiB in {r['elapsed']:.2f} s (detection included), "
          f"first stripe committed after {r['first']:.2f} s, then {r['steady_mb_s']:.1f} MB/s "
          f"({r['stripes']} stripes)")
    mib = max(r["rebuilt_mib"], 1e-9)
    print(f"  CPU meanwhile: gateway {r['gw_cpu']:.1f} s, nodes {r['node_cpu']:.1f} s over "
          f"{r['elapsed']:.1f} s wall on {os.cpu_count()} cores, i.e. per rebuilt MiB gateway "
          f"{1000 * r['gw_cpu'] / mib:.1f} ms + nodes {1000 * r['node_cpu'] / mib:.1f} ms; "
          f"load average {os.getloadavg()[0]:.1f}")
    steady = max(r["steady_mib"], 1e-9)
    print(f"  from the first rebuilt shard on ({r['steady_mib']:.1f} MiB): gateway "
          f"{1000 * r['steady_gw_cpu'] / steady:.1f} ms + nodes "
          f"{1000 * r['steady_node_cpu'] / steady:.1f} ms CPU per rebuilt MiB")
    if r["client_mib_s"] is not None:
        print(f"  client PUTs during repair: {r['client_mib_s']:.1f} MiB/s "
              f"({r['client_puts']} PUTs from the restart to the end of repair), "
              f"{r['client_rebuilding_mib_s'] or 0:.1f} MiB/s between the first and last "
              "stripe commit")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=48)
    ap.add_argument("--mib", type=int, default=4)
    ap.add_argument("--rate", type=float, help="repair MiB/s cap when idle (server default)")
    ap.add_argument("--busy-rate", type=float,
                    help="repair MiB/s cap while clients are active (server default)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory (logs)")
    ap.add_argument("--profile", metavar="SVG",
                    help="record the gateway and the nodes during the idle repair with "
                         "py-spy (SVG, or collapsed stacks if .txt)")
    ap.add_argument("--idle-only", action="store_true",
                    help="only the repair with no client traffic (no busy phase)")
    ap.add_argument("--drain", action="store_true",
                    help="instead of wiping a node, drain it (`tessera node drain`) and time the "
                         "rebalancer copying its shards away")
    ap.add_argument("--busy", action="store_true", help="with --drain: one client PUTs "
                    "--mib objects all along (the adaptive busy rate's case)")
    ap.add_argument("--busy-lag-ms", type=float,
                    help="TESSERA_{REPAIR,REBALANCE}_BUSY_LAG_MS (0 = fixed busy rate)")
    ap.add_argument("--port", type=int, help="S3 port; admin port +1, node port +2 "
                    "(default: free ports)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tessera-repair-bench-"))
    env = {**os.environ, **FAST_ENV, "TESSERA_REBALANCE_INTERVAL_S": "0.5",
           "TESSERA_SCRUB_RATE_MBPS": "0", "TESSERA_DEEP_SCRUB_RATE_MBPS": "0"}
    for name, val in (("RATE", a.rate), ("BUSY_RATE", a.busy_rate)):
        if val is not None:
            env[f"TESSERA_REPAIR_{name}_MBPS"] = env[f"TESSERA_REBALANCE_{name}_MBPS"] = str(val)
    if a.busy_lag_ms is not None:
        env["TESSERA_REPAIR_BUSY_LAG_MS"] = env["TESSERA_REBALANCE_BUSY_LAG_MS"] = \
            str(a.busy_lag_ms)
    c = ChaosCluster(tmp, env)
    if a.port:
        c.port, c.admin_port, c.node_port = a.port, a.port + 1, a.port + 2
    try:
        c.start()
        s3 = c.s3()
        s3.create_bucket(Bucket="bench")
        size = a.mib * 2**20
        base = put_rate(s3, "bench", "obj-", a.objects, size, 1)
        print(f"client PUTs with no repair: {base:.1f} MiB/s ({a.objects} x {a.mib} MiB)")
        if a.drain:
            files: dict[str, list[Path]] = {}
            for p in c.shard_files():
                files.setdefault(p.parts[-5], []).append(p)
            victim = max(files, key=lambda n: len(files[n]))
            return drain(c, victim, files[victim], size if a.busy else 0)
        idle = repair_once(c, tmp, set(), None, a.profile)
        if idle is None:
            return 1
        report("repair, no client traffic", idle)
        if a.idle_only:
            return 0
        busy = repair_once(c, tmp, {idle["victim"]}, size, None)
        if busy is None:
            return 1
        report("repair while one client PUTs", busy)
        after = put_rate(s3, "bench", "after-", 24, size, 3)  # same cluster, repair done
        print(f"client PUTs after repair: {after:.1f} MiB/s (24 x {a.mib} MiB)")
        print(f"summary: repair idle {idle['steady_mb_s']:.1f} MB/s; client PUTs "
              f"{base:.1f} MiB/s with no repair (before), {after:.1f} (after), "
              f"{busy['client_mib_s']:.1f} MiB/s during repair, "
              f"{busy['client_rebuilding_mib_s'] or 0:.1f} while stripes were being rebuilt "
              f"(repair meanwhile {busy['steady_mb_s']:.1f} MB/s)")
    finally:
        c.stop()
        if a.keep:
            print(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
