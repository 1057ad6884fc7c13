"""How repair rebuilds stripes at once: small ones many at a time, in shared batches.

Shards up to `WHOLE_SHARD_BYTES` (those of objects up to ~1.25 MiB at k=4) are rebuilt
whole (`storage/rebuild.py`): the source reads and rebuilt-shard writes of the stripes
repaired at once go to each node in shared batch requests on the node client's repair lane.
Measured (one node, 8 at once): a 256 KiB shard costs the node 0.50 ms per batched read
against 0.73 streamed, 1.67 per batched write against 1.90; at 1 MiB batching loses (1.67
against 1.25 per read: the body is copied and hashed where a stream goes out with sendfile).
They run `WHOLE_SHARE` times as many at once as streamed stripes (`parallel`), 32 by
default: only then do a node's ops share requests (1 MiB objects, `benchmarks/rebuild_cpu.py`:
nodes 33 -> 22-24 ms per rebuilt MiB, the rebuilding process the same). Memory: 32 x (k+2)
shards of at most 320 KiB, 60 MiB at 4+2.
"""

from __future__ import annotations

import asyncio

from storage.pipeline import shard_file_bytes
from storage.records import PartLayout

WHOLE_SHARD_BYTES = 320 * 1024
WHOLE_SHARE = 2  # 32 small stripes at once with the default `parallel` (16)
# Larger shards up to this size (objects up to ~4 MiB at k=4) are read as streams and each
# rebuilt shard is sent whole, one PUT through the node client's lean sender, instead of
# frame by frame over a streamed request (`rebuild_shards`' `gather_bytes`). Measured on
# 4 MiB objects (`benchmarks/rebuild_cpu.py --gather 0,2000000`, 7 alternating pairs at load
# 23-37): rebuilding process 7.68 -> 6.73 ms, nodes 14.1 -> 13.1 ms per rebuilt MiB, wall
# time lower in 6 of 7. Not beyond: with 4 MiB shards (16 MiB objects) the CPU fell as much
# (6.96 -> 6.46 ms) but each rebuild took ~15% longer in 3 of 3 pairs (the write no longer
# overlaps the reads). Memory: the rebuilt shards of `parallel` stripes, 16 x 2 x 1 MiB at 4+2.
GATHER_SHARD_BYTES = 1024 * 1024 + 64 * 1024


class RepairLanes:
    """The two gates of one repair batch: `parallel` streamed stripes at once, and
    `parallel * WHOLE_SHARE` stripes rebuilt whole; a new one starts as soon as one ends."""

    def __init__(self, parallel: int) -> None:
        self._streams = asyncio.Semaphore(max(1, parallel))
        self._wholes = asyncio.Semaphore(max(1, parallel) * WHOLE_SHARE)

    def gate(self, part: PartLayout) -> asyncio.Semaphore:
        """The gate a stripe's rebuild waits at: by the size of its shards."""
        whole = shard_file_bytes(part.size, part.segment_size, part.k) <= WHOLE_SHARD_BYTES
        return self._wholes if whole else self._streams
