"""A packed node's restart: time to index its packs from their footers against a scan of
every record, page cache dropped for the packs first (posix_fadvise DONTNEED), and the
index's memory per shard (tracemalloc), so shards per GiB of RAM.

    python benchmarks/pack_restart.py --shards 50000 --size 4096 --seal 16777216 [--dir D]

The packs are written once (group-committed PUTs, 64 at a time), then reopened alternately
with and without footers (`--rounds` pairs); the data dir is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nodes import packformat as pf  # noqa: E402
from nodes.packstore import PackStore  # noqa: E402


def sid_of(i: int) -> str:
    return f"{i:032x}.{i % 6}"


async def fill(s: PackStore, n: int, size: int) -> None:
    body = os.urandom(size)
    for start in range(0, n, 64):
        await asyncio.gather(*(s.put(sid_of(i), [body]) for i in range(start, min(n, start + 64))))


def drop_cache(root: Path) -> None:
    for p in (root / "packs").glob("*.pack"):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def reopen(root: Path, seal: int, footers: bool, traced: bool) -> tuple[float, float, int, int]:
    """(seconds, CPU seconds, traced bytes after open or 0, shards) of one open."""
    real = pf.read_footer
    if not footers:
        pf.read_footer = lambda read_at, size: None  # type: ignore[assignment]
    drop_cache(root)
    if traced:
        tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        s = PackStore(root, seal)
        s.open()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        used = tracemalloc.get_traced_memory()[0] if traced else 0
        n = len(s.index)
        s.close()
    finally:
        tracemalloc.stop()
        pf.read_footer = real  # type: ignore[assignment]
    return wall, cpu, used, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=50000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--seal", type=int, default=16 << 20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="packrestart-", dir=a.dir))
    try:
        s = PackStore(root, a.seal)
        s.open()
        asyncio.run(fill(s, a.shards, a.size))
        packs = len(s.sizes)
        s.close()
        print(f"{a.shards} shards of {a.size} B in {packs} packs of {a.seal} B")
        for _ in range(a.rounds):
            for footers in (True, False):
                wall, cpu, _, n = reopen(root, a.seal, footers, False)
                print(f"{'footer' if footers else 'scan  '}: {wall:.3f} s wall, "
                      f"{cpu:.3f} s CPU ({n} shards)")
        _, _, used, n = reopen(root, a.seal, True, True)
        print(f"index (and what open keeps) {used / n:.0f} B/shard = "
              f"{(1 << 30) * n / used / 1e6:.2f} M shards per GiB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
