#!/usr/bin/env python3
"""Metadata backends compared: SQLite (embedded) against a three-member etcd cluster.

    python benchmarks/metadata_bench.py                 # both backends; starts its own etcd
    python benchmarks/metadata_bench.py --backend etcd --etcd-endpoints http://h:2379,...
    python benchmarks/metadata_bench.py --json
    python benchmarks/metadata_bench.py --s3    # end to end: `tessera up --metadata X` each

Phases, on small records (default 512 B, about an object manifest) under one key prefix:
  put       plain puts, at concurrency 1 and --concurrency (the write path of every request)
  cas       create-if-absent transactions (how an object version is committed)
  get       point reads (HEAD / GET look up the manifest)
  range     pages of --page keys scanned in order (what one ListObjectsV2 page costs),
            and in reverse
Each figure is ops/s (pages/s for range) and p50/p99 latency. The etcd cluster started here
runs its three members on 127.0.1.10 / 127.0.2.10 / 127.0.3.10 of this machine, so numbers
include Raft replication and fsync on one disk, not network latency between zones.

With --s3 it starts a whole `tessera up` per backend instead and measures, through the S3
API, PUT ops/s of 4 KiB objects (the lean SigV4 client of s3_throughput.py) and
ListObjectsV2 pages/s (1000 keys a page, boto3); on etcd also the KV requests the members
served per op (from their /metrics: the gateway's round trips, background workers' scans
included; tests/contract/test_etcd_round_trips.py pins the exact per-request count), and the server's
CPU per op (user + system of the `tessera up` process tree: gateway, nodes, etcd members),
also less the idle cluster's rate (sampled for --idle-s before each phase) over the phase:
on a loaded machine a slow phase otherwise charges each op with more idle background.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops.etcdcluster import ETCD_HOSTS, EtcdCluster, default_members  # noqa: E402
from ops.localports import free_port  # noqa: E402
from storage.metadata import MetadataStore, Txn, open_store, prefix_end  # noqa: E402
from storage.metadata.etcd_tls import EtcdClientTLS, client_tls_in  # noqa: E402


@dataclass
class Result:
    backend: str
    phase: str
    concurrency: int
    count: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    kv_per_op: float | None = None  # etcd KV requests (all members) per op, --s3 on etcd only
    cpu_ms_per_op: float | None = None  # server CPU (gateway, nodes, etcd) per op, --s3 only
    cpu_split: dict[str, float] | None = None  # the same per process role, --s3 only
    # --s3: the idle cluster's CPU ms/s per role just before the phase (--idle-s), and the
    # phase's CPU per op with that idle rate taken out: on a loaded machine a slow phase
    # otherwise charges each op with more of the heartbeats and background polls
    cpu_idle_ms_s: dict[str, float] | None = None
    cpu_net_ms_per_op: float | None = None
    cpu_net_split: dict[str, float] | None = None


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of `root` and all its live descendants (from /proc)."""
    return sum(tree_cpu_by_role(root).values())


def _role(pid: int) -> str:
    """What a server process is, from its command line: etcd, gateway, nodes or up."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "up"
    if argv and argv[0].endswith(b"etcd"):
        return "etcd"
    for role in ("gateway", "nodes"):
        if role.encode() in argv:
            return role
    return "up"


def tree_cpu_by_role(root: int) -> dict[str, float]:
    """User + system CPU seconds of `root` and its live descendants, per `_role`."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                rest = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / tick)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total: dict[str, float] = {}
    todo, seen = [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        role = _role(pid)
        total[role] = total.get(role, 0.0) + stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


def etcd_kv_requests(endpoints: list[str], tls: EtcdClientTLS | None = None) -> int:
    """KV requests (Range, Txn, Put, DeleteRange) the etcd members have served, from their
    /metrics: the round trips the gateway made (background workers' few included)."""
    import urllib.request  # noqa: PLC0415

    total = 0
    ctx = tls.ssl_context() if tls is not None else None
    for ep in endpoints:
        with urllib.request.urlopen(f"{ep}/metrics", timeout=10, context=ctx) as r:
            for line in r.read().decode().splitlines():
                if (line.startswith("grpc_server_handled_total{")
                        and 'grpc_service="etcdserverpb.KV"' in line):
                    total += int(float(line.rsplit(" ", 1)[1]))
    return total


async def _timed(backend: str, phase: str, concurrency: int, ops: list[Callable[[], Awaitable[object]]]
                 ) -> Result:
    lat: list[float] = []
    it = iter(ops)

    async def worker() -> None:
        for op in it:
            t = time.perf_counter()
            await op()
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    dt = time.perf_counter() - t0
    lat.sort()
    return Result(backend, phase, concurrency, len(ops), round(dt, 3), round(len(ops) / dt, 1),
                  round(lat[len(lat) // 2] * 1000, 2), round(lat[int(len(lat) * 0.99)] * 1000, 2))


async def bench(backend: str, store: MetadataStore, args: argparse.Namespace) -> list[Result]:
    ns = f"bench/{os.getpid()}/{time.time_ns()}/".encode()
    value = os.urandom(args.value_size)
    n, conc = args.count, args.concurrency
    out = []
    keys = [ns + f"put/{i:08d}".encode() for i in range(n)]
    out.append(await _timed(backend, "put", 1, [
        (lambda k=k: store.put(k, value)) for k in keys[: max(1, n // 4)]]))
    out.append(await _timed(backend, "put", conc, [(lambda k=k: store.put(k, value))
                                                   for k in keys]))
    out.append(await _timed(backend, "cas", conc, [
        (lambda i=i: store.txn(Txn(compares={ns + f"cas/{i:08d}".encode(): 0},
                                   puts={ns + f"cas/{i:08d}".encode(): value})))
        for i in range(n)]))
    out.append(await _timed(backend, "get", conc, [(lambda k=k: store.get(k)) for k in keys]))
    start, end = ns + b"put/", prefix_end(ns + b"put/")
    pages = args.pages
    for reverse in (False, True):
        async def page_scan(reverse: bool = reverse) -> None:
            lo, hi = start, end
            for _ in range(pages):
                got = await store.range(lo, hi, args.page, reverse=reverse)
                if not got:
                    lo, hi = start, end
                    continue
                if reverse:
                    hi = got[-1].key
                else:
                    lo = got[-1].key + b"\x00"

        r = await _timed(backend, "range-rev" if reverse else "range", 1, [page_scan])
        r.count, r.rate = pages, round(pages / r.seconds, 1)
        r.p50_ms = r.p99_ms = round(r.seconds / pages * 1000, 2)
        out.append(r)
    return out


def s3_bench(backend: str, args: argparse.Namespace) -> list[Result]:
    """PUT 4 KiB ops/s and ListObjectsV2 pages/s through a whole local cluster."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from s3_throughput import SigV4Client, _small_phase  # noqa: PLC0415

    from tests.integration.cluster import LocalCluster  # noqa: PLC0415

    out = []
    with tempfile.TemporaryDirectory(prefix="tessera-mbench-s3-") as tmp:
        c = LocalCluster(Path(tmp) / "data", metadata=backend)
        if args.port_base:  # a fixed range (shared machines): S3, admin, nodes, etcd x2
            b = args.port_base
            c.port, c.admin_port, c.node_port = b, b + 1, b + 2
            c.etcd_port, c.etcd_peer_port = b + 3, b + 4
        c.start()
        try:
            creds = {"access_key": c.env["AWS_ACCESS_KEY_ID"],
                     "secret_key": c.env["AWS_SECRET_ACCESS_KEY"],
                     "region": c.env["AWS_DEFAULT_REGION"]}
            s3 = c.client()
            s3.create_bucket(Bucket="mbench")
            members = ([f"https://{h}:{c.etcd_port}" for h in ETCD_HOSTS]
                       if backend == "etcd" else [])
            tls = client_tls_in(c.data / "etcd" / "tls")

            def kv() -> int:
                return etcd_kv_requests(members, tls) if members else 0

            assert c.proc is not None

            def cpu() -> float:
                return tree_cpu_s(c.proc.pid)  # type: ignore[union-attr]

            def split() -> dict[str, float]:
                return tree_cpu_by_role(c.proc.pid)  # type: ignore[union-attr]

            def per_op(before: dict[str, float], n: int) -> dict[str, float]:
                return {k: round((v - before.get(k, 0.0)) * 1000 / n, 2)
                        for k, v in sorted(split().items())}

            def idle() -> dict[str, float]:
                before, t = split(), time.perf_counter()
                time.sleep(args.idle_s)
                dt = time.perf_counter() - t
                return {k: round((v - before.get(k, 0.0)) * 1000 / dt, 1)
                        for k, v in sorted(split().items())}

            def net(result: Result, rate: dict[str, float]) -> Result:
                """`result` with the idle rate over its phase's duration taken out."""
                assert result.cpu_split is not None
                result.cpu_idle_ms_s = rate
                result.cpu_net_split = {
                    k: round(v - rate.get(k, 0.0) * result.seconds / result.count, 2)
                    for k, v in result.cpu_split.items()}
                result.cpu_net_ms_per_op = round(sum(result.cpu_net_split.values()), 2)
                return result

            keys = [f"obj/{i:07d}" for i in range(args.count)]
            rate = idle()
            kv0, cpu0, split0 = kv(), cpu(), split()
            dt, lat, errs = asyncio.run(_small_phase(SigV4Client(c.endpoint, creds), "mbench",
                                                     keys, os.urandom(4096), "PUT",
                                                     args.concurrency))
            if errs:
                raise RuntimeError(f"{len(errs)} PUTs failed, first: {errs[0]}")
            lat.sort()
            out.append(net(Result(
                backend, "s3-put-4k", args.concurrency, len(keys), round(dt, 3),
                round(len(keys) / dt, 1), round(lat[len(lat) // 2] * 1000, 2),
                round(lat[int(len(lat) * 0.99)] * 1000, 2),
                round((kv() - kv0) / len(keys), 2) if members else None,
                round((cpu() - cpu0) * 1000 / len(keys), 2), per_op(split0, len(keys))), rate))
            lat = []
            token = None
            rate = idle()
            kv0, cpu0, split0 = kv(), cpu(), split()
            t0 = time.perf_counter()
            for _ in range(args.pages):
                kw = {"ContinuationToken": token} if token else {}
                t = time.perf_counter()
                r = s3.list_objects_v2(Bucket="mbench", MaxKeys=args.page, **kw)
                lat.append(time.perf_counter() - t)
                token = r.get("NextContinuationToken")
            dt = time.perf_counter() - t0
            lat.sort()
            out.append(net(Result(
                backend, "s3-list", 1, args.pages, round(dt, 3), round(args.pages / dt, 1),
                round(lat[len(lat) // 2] * 1000, 2), round(lat[int(len(lat) * 0.99)] * 1000, 2),
                round((kv() - kv0) / args.pages, 2) if members else None,
                round((cpu() - cpu0) * 1000 / args.pages, 2), per_op(split0, args.pages)), rate))
        finally:
            c.stop()
    return out


async def run(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tessera-mbench-") as tmp:
        base = Path(tmp)
        if "sqlite" in args.backend:
            s = await open_store("sqlite", str(base / "meta.db"))
            try:
                results += await bench("sqlite", s, args)
            finally:
                await s.close()
        if "etcd" in args.backend:
            cluster = None
            endpoints = tuple(e for e in args.etcd_endpoints.split(",") if e)
            if not endpoints:
                client = free_port(list(ETCD_HOSTS))
                peer = free_port(list(ETCD_HOSTS))
                cluster = EtcdCluster(base / "etcd", default_members(client, peer), base / "logs",
                                      token="bench")
                await asyncio.to_thread(cluster.start)
                endpoints = cluster.endpoints
            try:
                s = await open_store("etcd", "", endpoints,
                                     cluster.client_tls if cluster is not None else None)
                try:
                    results += await bench("etcd", s, args)
                finally:
                    await s.close()
            finally:
                if cluster is not None:
                    await asyncio.to_thread(cluster.stop)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", nargs="+", default=["sqlite", "etcd"],
                   choices=["sqlite", "etcd"])
    p.add_argument("--etcd-endpoints", default="", help="use a running etcd (comma separated)")
    p.add_argument("--count", type=int, default=4000, help="records per phase")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--value-size", type=int, default=512)
    p.add_argument("--page", type=int, default=1000, help="keys per range page")
    p.add_argument("--pages", type=int, default=40, help="range pages per phase (wrapping)")
    p.add_argument("--s3", action="store_true", help="end to end through `tessera up`")
    p.add_argument("--port-base", type=int, default=0,
                   help="--s3: ports base..base+4 (S3, admin, nodes, etcd client, peer), "
                   "not random free ones")
    p.add_argument("--idle-s", type=float, default=5.0,
                   help="--s3: seconds of idle cluster CPU sampled before each phase")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    try:
        if args.s3:
            results = [r for b in args.backend for r in s3_bench(b, args)]
        else:
            results = asyncio.run(run(args))
    except (RuntimeError, OSError) as exc:
        print(f"metadata_bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return 0
    print(f"{'backend':8} {'phase':10} {'conc':>4} {'count':>6} {'ops/s':>9} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'etcd rt/op':>10} {'cpu ms/op':>9}")
    for r in results:
        rt = "" if r.kv_per_op is None else f"{r.kv_per_op:.2f}"
        cpu = "" if r.cpu_ms_per_op is None else f"{r.cpu_ms_per_op:.2f}"
        print(f"{r.backend:8} {r.phase:10} {r.concurrency:>4} {r.count:>6} {r.rate:>9.1f} "
              f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {rt:>10} {cpu:>9}")
        if r.cpu_split:
            print(" " * 10 + "cpu ms/op by process: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in r.cpu_split.items()))
        if r.cpu_net_split and r.cpu_idle_ms_s:
            print(" " * 10 + f"less idle: {r.cpu_net_ms_per_op:.2f} ms/op ("
                  + ", ".join(f"{k} {v:.2f}" for k, v in r.cpu_net_split.items())
                  + "); idle ms/s: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in r.cpu_idle_ms_s.items()))
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"(range rows: pages/s of {args.page} keys; value size {args.value_size} B)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
