"""Lying shards: valid frame checksums, wrong bytes. What happens once one is named.

Only the gateway can see such a shard (nodes hold no keys; its CRCs are right): a read whose
GCM tag fails tries other k-subsets of the shards and names the shards that disagree with
the segment that authenticates (`StripeCodec.authenticate`), and the deep scrub
(`storage/workers/deepscrub.py`) checks every shard against the authenticated plaintext.
Each finding is handed to `LyingShards.report`, which in the background

- merges `{"lying": {index: node}}` into the stripe's urgent repair entry `(R, !, stripe)`:
  repair decodes the stripe segment by segment from blocks that authenticate, the liar's
  own honest blocks included, and rewrites every shard named there (`rebuild_shards` with a
  reference); the lying copy is then replaced in place or collected;
- does NOT ask the node to move the shard aside: lies are per segment, and a shard that
  lies in one segment may hold the only spare honest block of another (shard 0 lying in
  segment 0, 1 in 1, 2 in 2: quarantining 0 and 1 whole would lose segment 2). Until
  repair, readers skip a named liar within a read and use it only where others fail;
- counts it: per process for the gateway's `/metrics`, and cluster-wide in `(S, integrity)`
  (compare-and-swap) for `tessera status`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from storage.config import NodeSpec
from storage.keyspace import system_key, urgent_repair_key
from storage.metadata import MetadataStore, Txn
from storage.metadata.fence import outside_step
from storage.records import pack, unpack
from storage.shards.ids import shard_id
from storage.shards.transport import NodeTransport
from storage.workers.base import read_counters

log = logging.getLogger("tessera.integrity")
INTEGRITY_KEY = system_key("integrity")
RECENT = 4096  # (stripe, index, node) findings remembered, so one lie is counted once
RECENT_S = 60.0  # ...for this long (a shard may lie again after it was rebuilt)
REASON = "fails-gcm-authentication"


class LyingShards:
    """Counts and queues for repair the lying shards this process finds."""

    def __init__(self, meta: MetadataStore | None, client: NodeTransport) -> None:
        self._meta = meta
        self._client = client
        self.found: dict[str, int] = {}  # where ("read", "scrub") -> lying shards found here
        self._recent: OrderedDict[tuple[bytes, int, str], float] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def report(self, stripe_id: bytes, index: int, node: NodeSpec, where: str,
               segment: int) -> bool:
        """Record a lying shard (once per stripe, index and node); False if already known."""
        key = (stripe_id, index, node.id)
        now = time.monotonic()
        if now - self._recent.get(key, -RECENT_S) < RECENT_S:
            return False
        self._recent[key] = now
        self._recent.move_to_end(key)
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        self.found[where] = self.found.get(where, 0) + 1
        log.warning("lying shard %s on node %s (found by %s, segment %d)",
                    shard_id(stripe_id, index), node.id, where, segment)
        task = asyncio.get_running_loop().create_task(  # the process's finding, not a step's
            self.record(stripe_id, index, node, where, segment), context=outside_step())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def settle(self) -> None:
        """Wait for the findings reported so far to be recorded (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def record(self, stripe_id: bytes, index: int, node: NodeSpec, where: str,
                     segment: int) -> None:
        """Queue the repair that rewrites it, count it cluster-wide (no node quarantine)."""
        if self._meta is None:
            return
        try:
            await self._queue(stripe_id, index, node.id, where)
            await self._count(where)
        except Exception:  # noqa: BLE001 - metadata unreachable: the scrub will find it again
            log.exception("cannot record lying shard %s", shard_id(stripe_id, index))

    async def _queue(self, stripe_id: bytes, index: int, node_id: str, where: str) -> None:
        assert self._meta is not None
        key = urgent_repair_key(stripe_id)  # one shard fewer: at risk for 4+2
        for _ in range(16):
            item = await self._meta.get(key)
            entry = unpack(item.value) if item else {"queued": time.time()}
            entry.pop("fv", None)
            lying = dict(entry.get("lying") or {})
            lying[str(index)] = node_id
            entry.update(lying=lying, reason=f"lying shard {index} on {node_id} ({where})",
                         retry_at=0)
            if await self._meta.txn(Txn(compares={key: item.revision if item else 0},
                                        puts={key: pack(entry)})):
                return

    async def _count(self, where: str) -> None:
        assert self._meta is not None

        def add(doc: dict[str, Any]) -> None:
            found = dict(doc.get("lying_found") or {})
            found[where] = int(found.get(where, 0)) + 1
            doc.update(lying_found=found, last_found=time.time())

        await update_integrity(self._meta, add)


async def update_integrity(meta: MetadataStore, change: Callable[[dict[str, Any]], None],
                           ) -> None:
    """Apply `change` to the `(S, integrity)` document with compare-and-swap (several gateways
    and the deep scrub write it)."""
    for _ in range(16):
        item = await meta.get(INTEGRITY_KEY)
        doc = unpack(item.value) if item else {}
        doc.pop("fv", None)
        change(doc)
        if await meta.txn(Txn(compares={INTEGRITY_KEY: item.revision if item else 0},
                              puts={INTEGRITY_KEY: pack(doc)})):
            return


async def read_integrity(meta: MetadataStore) -> dict[str, Any]:
    """The cluster-wide integrity counters (`(S, integrity)`; empty before the first finding)."""
    return await read_counters(meta, INTEGRITY_KEY)


__all__ = ["INTEGRITY_KEY", "LyingShards", "read_integrity", "update_integrity"]
