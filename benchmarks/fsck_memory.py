"""Peak Python heap of `tessera fsck` (storage/fsck.py) over N stripes: does it grow with the
store? A SQLite store with N one-stripe objects (O record + X entry, 4+2) and nodes that list
every stripe's 6 shards, generated on the fly (the listing itself holds nothing), so the
figure is fsck's own memory.

    python benchmarks/fsck_memory.py 100000 [--old PATH]

`--old PATH` runs the fsck module at PATH (e.g. `git show main:storage/fsck.py > /tmp/f.py`)
over the same store. Prints stripes, seconds and tracemalloc's peak in MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from storage.config_sections import NodeSpec
from storage.keyspace import object_key, stripe_index_key
from storage.metadata import Txn
from storage.metadata.sqlite import SqliteStore
from storage.records import ObjectVersion, PartLayout, pack

NODES = [NodeSpec(id=f"n{i}", zone=f"az{i % 3}", address=f"127.0.0.1:{i + 1}") for i in range(9)]


def stripe(i: int) -> bytes:
    return i.to_bytes(16, "big")


def placed(i: int) -> list[str | None]:
    return [NODES[(i + j) % 9].id for j in range(6)]


class Listing:
    """Node shard listings computed from the stripe number: sorted, paged, nothing held."""

    def __init__(self, n: int) -> None:
        self.n = n

    async def list_shards(self, node: NodeSpec, after: str = "", limit: int = 1000) -> list[str]:
        out: list[str] = []
        i = int(after.split(".")[0], 16) if after else 0
        while i < self.n and len(out) < limit:
            for j, nid in enumerate(placed(i)):
                sid = f"{stripe(i).hex()}.{j}"
                if nid == node.id and sid > after:
                    out.append(sid)
            i += 1
        return out


async def build(meta: SqliteStore, n: int) -> None:
    batch: dict[bytes, bytes] = {}
    for i in range(n):
        key = f"k{i:09d}"
        v = ObjectVersion(bucket="b", key=key, version_id="null", tenant="t", size=1, etag="e",
                          last_modified=0.0, parts=[PartLayout(
                              number=1, size=1, etag="e", stripe_id=stripe(i), k=4, m=2,
                              segment_size=1, nodes=placed(i))])
        batch[object_key("b", key)] = v.encode()
        batch[stripe_index_key(stripe(i))] = pack({"state": "live", "bucket": "b", "key": key,
                                                   "version": "null"})
        if len(batch) >= 2000:
            await meta.txn(Txn(puts=batch))
            batch = {}
    if batch:
        await meta.txn(Txn(puts=batch))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("--old", help="path of another fsck module to run instead")
    a = ap.parse_args()
    mod: Any
    if a.old:
        spec = importlib.util.spec_from_file_location("old_fsck", a.old)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules["old_fsck"] = mod  # dataclasses look their module up
        spec.loader.exec_module(mod)
    else:
        import storage.fsck as mod
    with tempfile.TemporaryDirectory(prefix="fsckmem") as d:
        meta = await SqliteStore.open(Path(d) / "m.db")
        await build(meta, a.n)
        tracemalloc.start()
        t = time.monotonic()
        report = await mod.fsck(meta, Listing(a.n), NODES)
        took = time.monotonic() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        await meta.close()
    print(f"stripes {a.n} errors {report.errors} seconds {took:.1f} "
          f"peak {peak / (1 << 20):.1f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
