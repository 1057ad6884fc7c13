"""CPU of the rebuild data path alone: `rebuild_shards` over a real cluster's stripes.

    python benchmarks/rebuild_cpu.py [--objects 60] [--mib 4] [--parallel 8[,16]] [--whole 0[,524288]]
        [--gather 0[,4194304]]
        [--rounds 2]

Starts its own `tessera up` (sweep and scrubs off), writes the objects, then in this process
rebuilds shard 5 of every stripe from shards 0-4 (k+1 sources, as repair reads them) onto
the node that already holds it (`replace`: the same bytes again, nothing changes), `parallel`
stripes at once, as the repair worker does. Prints this process's CPU (user + system, all
threads) and the nodes' CPU (/proc) per rebuilt MiB: the rebuild without the repair
worker's assessment, metadata commits or sweep, with far less noise than `repair_speed.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.repair_speed import cpu_seconds  # noqa: E402
from ops.chaos_cluster import ChaosCluster  # noqa: E402
from storage.buffers import BufferPool  # noqa: E402
from storage.config import load_config  # noqa: E402
from storage.keyspace import STRIPE, space, stripe_of  # noqa: E402
from storage.metadata.sqlite import SqliteStore  # noqa: E402
from storage.rebuild import rebuild_shards  # noqa: E402
from storage.shards.auth import load_or_create_secret  # noqa: E402
from storage.shards.client import NodeClient  # noqa: E402
from storage.stripes import POOL_BYTES  # noqa: E402
from storage.workers.manifests import Manifest, load_manifest  # noqa: E402


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def rebuild_all(data: Path, parallels: list[int], wholes: list[int], rounds: int,
                      profile: str | None, gathers: list[int] | None = None) -> None:
    cfg = load_config(data / "tessera.toml")
    meta = await SqliteStore.open(str(data / cfg.metadata_path))
    by_id = {n.id: n for n in cfg.nodes}
    parts = []
    for item in await meta.range(*space(STRIPE), limit=100000):
        man = await load_manifest(meta, stripe_of(item.key))
        if isinstance(man, Manifest) and man.part.size:
            parts.append(man.part)
    await meta.close()
    secret = load_or_create_secret(cfg.secret_path)
    conn = aiohttp.TCPConnector(limit=0, limit_per_host=64, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=conn, auto_decompress=False) as session:
        client = NodeClient(session, secret)  # as Cluster.open does
        pool = BufferPool(POOL_BYTES)
        gate = asyncio.Semaphore(max(parallels))
        whole = gather = 0
        variants = [(p, w, g) for p in parallels for w in wholes for g in gathers or [0]]
        with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as cpu:
            async def one(part) -> int:  # noqa: ANN001
                async with gate:
                    w = part.k + part.m - 1
                    res = await rebuild_shards(
                        client, cpu, part, [(i, by_id[part.nodes[i]]) for i in range(w)],
                        {w: by_id[part.nodes[w]]}, pool=pool, whole_bytes=whole, gather_bytes=gather)
                    assert res.written and not res.failed, res
                    return res.bytes_written

            await asyncio.gather(*(one(p) for p in parts[:max(parallels)]))  # warm up
            spies = []
            if profile:  # py-spy on every node process, from the second round on
                for f in sorted((data / "run").glob("*.pid")):
                    if f.stem != "gateway":
                        spies.append(subprocess.Popen(
                            ["py-spy", "record", "-p", f.read_text().strip(), "-f", "raw",
                             "-o", f"{profile}.{f.stem}.txt", "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for r in range(rounds * len(variants)):
                parallel, whole, gather = variants[r % len(variants)]
                gate = asyncio.Semaphore(parallel)
                c0, n0, t0 = own_cpu(), cpu_seconds(data / "run"), time.perf_counter()
                nbytes = sum(await asyncio.gather(*(one(p) for p in parts)))
                c1, n1, t1 = own_cpu(), cpu_seconds(data / "run"), time.perf_counter()
                mib = nbytes / 2**20
                nodes = sum(v - n0.get(k, v) for k, v in n1.items() if k != "gateway")
                print(f"round {r}, {parallel} at once, whole_bytes {whole}, gather_bytes {gather}: {len(parts)} stripes, {mib:.1f} MiB rebuilt in "
                      f"{t1 - t0:.2f} s: rebuilding process {1000 * (c1 - c0) / mib:.2f} ms + "
                      f"nodes {1000 * nodes / mib:.2f} ms CPU per rebuilt MiB; load average "
                      f"{os.getloadavg()[0]:.1f}")
            for spy in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
        client.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=60)
    ap.add_argument("--mib", type=int, default=4)
    ap.add_argument("--parallel", default="8",
                    help="stripes at once; a comma list alternates them round by round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--whole", default="0",
                    help="rebuild_shards' whole_bytes (shards that small are rebuilt whole, "
                         "batched per node); a comma list alternates them")
    ap.add_argument("--gather", default="0",
                    help="rebuild_shards' gather_bytes (shards that small are read as streams "
                         "and written whole, one PUT each); a comma list alternates them")
    ap.add_argument("--profile", metavar="PREFIX",
                    help="py-spy the nodes (raw stacks in PREFIX.<node>.txt)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tessera-rebuild-cpu-"))
    env = {**os.environ, "TESSERA_REPAIR_SWEEP_S": "3600", "TESSERA_SCRUB_RATE_MBPS": "0",
           "TESSERA_DEEP_SCRUB_RATE_MBPS": "0"}
    c = ChaosCluster(tmp, env)
    try:
        c.start()
        s3 = c.s3()
        s3.create_bucket(Bucket="bench")
        rnd = random.Random(1)
        for i in range(a.objects):
            s3.put_object(Bucket="bench", Key=f"obj-{i}", Body=rnd.randbytes(a.mib << 20))
        asyncio.run(rebuild_all(tmp, [int(x) for x in a.parallel.split(",")],
                                [int(x) for x in a.whole.split(",")], a.rounds, a.profile,
                                [int(x) for x in a.gather.split(",")]))
    finally:
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
