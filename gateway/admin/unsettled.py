"""Orphan shards a forced node removal must not abandon yet: writes still settling.

A stripe's index entry (X) is written only in its write's commit transaction, so until then
its shards, already renamed into place on the nodes, look exactly like orphans. A write that
has not committed within `[repair] orphan_grace_s` of its first shard is refused at its
commit (`storage.write_age`), which is why the orphan sweep waits that long; `tessera node
remove --force` waits for the same bound before it abandons a shard without an index entry.
Stripes that can never be committed again are exempt: an X entry in a terminal state, a
discarded write's tombstone (XD), or a place in the collector's queue (G: a deleted version's
stripe, whose X entry is already gone).
"""

from __future__ import annotations

import time
from typing import Any

from gateway.admin.auth import AdminError
from storage.config import NodeSpec
from storage.errors import StorageError
from storage.keyspace import GC, component, discarded_key, next_key, space, stripe_index_key
from storage.metadata import MetadataStore
from storage.shards.ids import parse_shard_id
from storage.workers.repair_orphans import shard_age


class Unsettled:
    """Counts a node's unindexed orphans younger than the grace, and refuses if any."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.young: dict[bytes, tuple[str, float]] = {}  # stripe -> (shard id, s left)

    async def check(self, cluster: Any, node: NodeSpec, sid: str) -> None:
        """Note `sid` (an ORPHAN on `node`) if a write may still commit it."""
        try:
            stripe_id, _ = parse_shard_id(sid)
        except ValueError:
            return  # no stripe's shard at all
        if await cluster.meta.get(stripe_index_key(stripe_id)) is not None:
            return  # its stripe was committed and has ended: no commit names it again
        try:
            st = await cluster.nodes.stat_shard(node, sid)
        except StorageError:
            st = {"age_s": 0.0}  # its age cannot be vouched for
        if st is None:
            return  # gone meanwhile
        left = self.grace_s - shard_age(st, time.time())
        if left > 0:
            self.young[stripe_id] = (sid, left)

    async def refuse(self, meta: MetadataStore, node_id: str) -> None:
        """An AdminError (409) naming the young orphans a commit may still name, and when to
        try again; those of discarded or deleted stripes are dropped first."""
        for stripe_id in list(self.young):
            if await meta.get(discarded_key(stripe_id)) is not None:
                del self.young[stripe_id]
        lo, hi = space(GC)
        while self.young:
            page = await meta.range(lo, hi, limit=1000)
            for it in page:
                self.young.pop(bytes.fromhex(component(it.key, 2)), None)
            if len(page) < 1000:
                break
            lo = next_key(page[-1].key)
        if self.young:
            wait_s = max(left for _, left in self.young.values())
            eg = ", ".join(sid for sid, _ in list(self.young.values())[:10])
            raise AdminError(409, "NodeNotSettled", f"node {node_id!r} holds {len(self.young)} "
                             "shard(s) no stripe names yet that are younger than [repair] "
                             f"orphan_grace_s ({self.grace_s:g} s): they may belong to writes "
                             "that have not committed yet, and --force would drop them; try "
                             f"again in {wait_s:.0f} s (e.g. {eg})")
