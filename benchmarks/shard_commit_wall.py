"""Wall time and CPU of a node's durable shard write, below HTTP: `DiskShardStore.begin_put`,
one write, `commit` (fsync, fan-out directories, link, directory fsync), C at a time.

Every shard lands in a new fan-out directory (random ids in a fresh store), as on a young
node with random stripe ids; `--per-leaf N` gives N shards in a row one leaf, as stripe ids
that name their second do (`storage.shards.ids.new_stripe_id`: ~60 a second per node at
90 1 MiB objects/s). `--whole` commits each body in one call, as the lean front does (the
unnamed O_TMPFILE commit). Run it from two trees back to back to compare their commit
policies, or with two `--per-leaf` values:

    python benchmarks/shard_commit_wall.py [-n 150] [-c 3] [--size 262200] [--dir /tmp]
        [--whole] [--per-leaf 60]
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


async def run(n: int, c: int, size: int, where: str, whole: bool = False,
              per_leaf: int = 1) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="shard-commit-", dir=where))
    try:
        store = DiskShardStore(base)
        await store.start()
        body = os.urandom(size)
        leaves = [secrets.token_bytes(2) for _ in range(-(-n // per_leaf))]
        todo = [shard_id((leaves[i // per_leaf] if per_leaf > 1 else secrets.token_bytes(2))
                         + secrets.token_bytes(14), i % 6) for i in range(n)][::-1]
        walls: list[float] = []

        async def worker() -> None:
            while todo:
                sid = todo.pop()
                t = time.perf_counter()
                w = await store.begin_put(sid)
                if whole:
                    await w.commit([memoryview(body)])
                else:
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
    ap.add_argument("--whole", action="store_true", help="one commit call per shard")
    ap.add_argument("--per-leaf", type=int, default=1, help="shards in a row per leaf")
    a = ap.parse_args()
    r = asyncio.run(run(a.n, a.c, a.size, a.dir, a.whole, a.per_leaf))
    print(f"n={a.n} c={a.c} size={a.size} whole={a.whole} per-leaf={a.per_leaf}: commit wall p50 {r['p50_ms']:.2f} ms, mean "
          f"{r['mean_ms']:.2f} ms, {r['per_s']:.0f} shards/s, process CPU {r['cpu_ms']:.2f} "
          f"ms/shard; load average {r['load']:.1f}")


if __name__ == "__main__":
    main()
