"""Wall time and CPU of a node's durable shard write, below HTTP: `DiskShardStore.begin_put`,
one write, `commit` (fsync, fan-out directories, link, directory fsync), C at a time.

Every shard lands in a new fan-out directory (random ids in a fresh store), as on a young
node. Run it from two trees back to back to compare their commit policies:

    python benchmarks/shard_commit_wall.py [-n 150] [-c 3] [--size 262200] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nodes.disk import DiskShardStore  # noqa: E402
from storage.shards.ids import shard_id  # noqa: E402


async def run(n: int, c: int, size: int, where: str) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="shard-commit-", dir=where))
    try:
        store = DiskShardStore(base)
        await store.start()
        body = os.urandom(size)
        todo = [shard_id(secrets.token_bytes(16), i % 6) for i in range(n)]
        walls: list[float] = []

        async def worker() -> None:
            while todo:
                sid = todo.pop()
                t = time.perf_counter()
                w = await store.begin_put(sid)
                await w.write(body)
                await w.commit()
                walls.append(time.perf_counter() - t)

        cpu0, t0 = os.times(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        cpu1, secs = os.times(), time.perf_counter() - t0
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"p50_ms": statistics.median(walls) * 1e3, "mean_ms": statistics.mean(walls) * 1e3,
            "per_s": n / secs, "cpu_ms": ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system))
            / n * 1e3, "load": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=150, help="shards written")
    ap.add_argument("-c", type=int, default=3, help="concurrent writes")
    ap.add_argument("--size", type=int, default=262200, help="bytes per shard file")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the store is made")
    a = ap.parse_args()
    r = asyncio.run(run(a.n, a.c, a.size, a.dir))
    print(f"n={a.n} c={a.c} size={a.size}: commit wall p50 {r['p50_ms']:.2f} ms, mean "
          f"{r['mean_ms']:.2f} ms, {r['per_s']:.0f} shards/s, process CPU {r['cpu_ms']:.2f} "
          f"ms/shard; load average {r['load']:.1f}")


if __name__ == "__main__":
    main()
