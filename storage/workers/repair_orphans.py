"""Repair's housekeeping: quarantine reports from the nodes, and orphaned shards.

The node scrubbers (and reads) quarantine corrupt shards: their stripes are queued for
repair. Shards no manifest names (no stripe index entry, or a stale copy the manifest no
longer names) are deleted once older than the orphan grace and watched by this sweep without
an owner for as long on its monotonic clock (`OrphanWatch`), one page per node per pass; a
stale copy of a live stripe is queued for the collector instead, whose fence keeps it from
deleting a copy a commit names meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from storage.config import NodeSpec, RepairSettings
from storage.errors import StorageError
from storage.health import HealthTracker
from storage.keyspace import stripe_index_key
from storage.metadata import MetadataStore
from storage.shards.ids import parse_shard_id
from storage.shards.transport import NodeTransport
from storage.workers.manifests import Manifest, collect_copies, load_manifest

log = logging.getLogger("tessera.repair")


def shard_age(st: dict[str, Any], now: float) -> float:
    """A shard file's age from its node's stat: the node's own `age_s` (its clock less the
    mtime its clock set), so a node whose clock is hours off the gateway's neither loses a
    write in flight to the sweep nor keeps orphans; `now` less the mtime from a node that
    does not report it (an older one)."""
    if "age_s" in st:
        return float(st["age_s"])
    return now - float(st.get("mtime", now))


NAMED, STALE, ORPHAN, OWNED, VOLUME = "named", "stale", "orphan", "owned", "volume"
WATCH_MAX = 100_000  # shards without an owner remembered at once (~20 MB at most)


class OrphanWatch:
    """When this sweep first saw each shard without an owner, on its own monotonic clock.

    A shard's age (`shard_age`) is wall-clock time: its node's clock less the mtime. A clock
    stepped forward between a write's first shard and its commit made fresh shards look
    old, and the sweep deleted shards the commit then named. A write commits only within
    `WriteAge`'s limit of its first shard on the writer's monotonic clock, which no step
    moves; so a shard this sweep has watched without an owner for the grace, on its own
    monotonic clock, belongs to no write that can still commit. Both must hold for a
    delete: the wall-clock age (a fresh watch after a restart waits no longer than that
    once it is past) and the watch (which no wall clock moves).

    Bounded: a shard seen owned, deleted or gone is forgotten, and so is one a node's whole
    walk (`wrapped`) did not meet; past `WATCH_MAX` new shards wait for room."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 limit: int = WATCH_MAX) -> None:
        self.clock = clock
        self._limit = limit
        self._first: dict[tuple[str, str], tuple[float, int]] = {}  # -> (first seen, walk)
        self._walk: dict[str, int] = {}  # node -> walks over its shards begun

    def watched_s(self, node_id: str, sid: str) -> float:
        """Seconds since this sweep first saw `sid` on `node_id` without an owner (0 now)."""
        now, walk = self.clock(), self._walk.get(node_id, 0)
        first = self._first.get((node_id, sid))
        if first is None and len(self._first) >= self._limit:
            return 0.0
        since = now if first is None else first[0]
        self._first[(node_id, sid)] = (since, walk)
        return now - since

    def forget(self, node_id: str, sid: str) -> None:
        self._first.pop((node_id, sid), None)

    def wrapped(self, node_id: str) -> None:
        """A walk over `node_id`'s shards ended: forget its shards the walk did not meet."""
        walk = self._walk.get(node_id, 0)
        self._first = {k: v for k, v in self._first.items()
                       if k[0] != node_id or v[1] == walk}
        self._walk[node_id] = walk + 1


async def shard_owner(meta: MetadataStore, sid: str, node_id: str,
                      volume_stripes: set[bytes] | None) -> tuple[str, Manifest | None]:
    """Who needs shard `sid` on node `node_id`, with its stripe's manifest when it has one:
    NAMED (its stripe's manifest names this copy), STALE (a live stripe names another
    node at that index: a moved or rebuilt copy), ORPHAN (no stripe names it, or the id
    does not parse), OWNED (an index entry in a state owned elsewhere: a write settling),
    VOLUME (a block volume extent without an index entry; also any stripe when
    `volume_stripes` is unknown (None), as nothing then vouches it is not one)."""
    try:
        stripe_id, index = parse_shard_id(sid)
    except ValueError:
        return ORPHAN, None
    man = await load_manifest(meta, stripe_id)
    if isinstance(man, str):
        return (ORPHAN, None) if man == "gone" else (OWNED, None)
    if man is None:
        return (VOLUME, None) if volume_stripes is None or stripe_id in volume_stripes \
            else (ORPHAN, None)
    nodes = man.part.nodes
    return (NAMED if index < len(nodes) and nodes[index] == node_id else STALE), man


class RepairHousekeeping:
    """Quarantine polling and orphan collection (a base of `RepairWorker`)."""

    settings: RepairSettings
    stats: Any
    _health: HealthTracker
    _client: NodeTransport
    _meta: MetadataStore
    _dirty: bool
    _quarantine_since: dict[str, float]
    _orphan_cursor: dict[str, str]
    _orphan_watch: OrphanWatch
    _volume_stripes: set[bytes] | None

    async def enqueue(self, stripe_id: bytes, reason: str, urgent: bool = False) -> None:
        raise NotImplementedError

    async def _poll_quarantine(self) -> None:
        """Queue the stripes of shards the nodes' scrubbers (or reads) quarantined."""
        await asyncio.gather(*(self._quarantine_on(node) for node in self._health.usable()))

    async def _quarantine_on(self, node: NodeSpec) -> None:
        since = self._quarantine_since.get(node.id, 0.0)
        try:
            entries = await self._client.quarantined(node, since)
        except StorageError:
            return
        for e in entries:
            t = float(e.get("time", 0.0))
            self._quarantine_since[node.id] = max(self._quarantine_since.get(node.id, 0.0), t)
            try:
                stripe_id, _ = parse_shard_id(str(e.get("shard_id", "")))
            except ValueError:
                continue
            if await self._meta.get(stripe_index_key(stripe_id)) is not None:
                # a shard gone from its stripe: at risk under k+2 (4+2), read first
                await self.enqueue(stripe_id, f"quarantined on {node.id}", urgent=True)
                self.stats.quarantine_reports += 1
                self._dirty = True

    async def _collect_orphans(self) -> None:
        """Delete one page per node of shards no manifest names, older than the grace and
        watched without an owner for as long (`OrphanWatch`)."""
        now = time.time()
        await asyncio.gather(*(self._orphans_on(node, now) for node in self._health.usable()))
        self.stats.orphan_checks += 1
        self._dirty = True

    async def _orphans_on(self, node: NodeSpec, now: float) -> None:
        """One page of the orphan check on one node (nodes are checked concurrently)."""
        after = self._orphan_cursor.get(node.id, "")
        try:
            ids = await self._client.list_shards(node, after=after, limit=200)
        except StorageError:
            return
        self._orphan_cursor[node.id] = ids[-1] if len(ids) == 200 else ""
        watch, grace = self._orphan_watch, self.settings.orphan_grace_s
        for sid in ids:
            try:
                stripe_id, index = parse_shard_id(sid)
            except ValueError:
                continue
            owner, man = await shard_owner(self._meta, sid, node.id, self._volume_stripes)
            if owner not in (STALE, ORPHAN):
                watch.forget(node.id, sid)
                continue  # named, owned elsewhere (a write settling), or a volume extent
            if watch.watched_s(node.id, sid) < grace:
                continue  # (a write may still commit it, whatever the wall clocks say)
            try:
                st = await self._client.stat_shard(node, sid)
            except StorageError:
                continue
            if st is None:  # gone meanwhile
                watch.forget(node.id, sid)
                continue
            if shard_age(st, now) < grace:
                continue
            if isinstance(man, Manifest):  # a stale copy: a commit may name it again, so
                # it goes through the collector's fence (storage/workers/gcfence.py)
                await collect_copies(self._meta, stripe_id, {index: node.id})
                watch.forget(node.id, sid)
                self.stats.orphans_deleted += 1
                self._dirty = True
                continue
            try:
                await self._client.delete_shard(node, sid)
            except StorageError:
                continue
            watch.forget(node.id, sid)
            self.stats.orphans_deleted += 1
            self._dirty = True
            log.info("deleted orphan shard %s on %s", sid, node.id)
        if len(ids) < 200:
            watch.wrapped(node.id)
