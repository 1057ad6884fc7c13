"""Repair's housekeeping: quarantine reports from the nodes, and orphaned shards.

The node scrubbers (and reads) quarantine corrupt shards: their stripes are queued for
repair. Shards no manifest names (no stripe index entry, or a stale copy the manifest no
longer names) are deleted once older than the orphan grace and watched by this sweep without
an owner for as long on monotonic clocks (`OrphanWatch`), one page per node per pass, and
the shards watched for the grace already re-checked by id at each pass (not a whole walk
later); a stale copy of a live stripe is queued for the collector instead, whose fence keeps
it from deleting a copy a commit names meanwhile (it takes no place in the watch).

The watch is kept in the metadata store (storage/workers/orphan_watch.py), so a repair lease
holder that restarts (or whose lease moves) continues it; `orphans_watched` and
`orphan_watch_oldest_s` (published stats, gauges) show it. The walk's position is published
(`orphan_cursor`), so a restart does not start every node's walk again either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from storage.config import NodeSpec, RepairSettings
from storage.errors import StorageError
from storage.health import OUT, HealthTracker
from storage.keyspace import stripe_index_key
from storage.metadata import MetadataStore
from storage.shards.ids import parse_shard_id
from storage.shards.transport import NodeTransport
from storage.workers.manifests import Manifest, collect_copies, load_manifest
from storage.workers.orphan_watch import OrphanWatch

__all__ = ["OrphanWatch", "RepairHousekeeping", "shard_age", "shard_owner"]

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
        watched without an owner for as long (`OrphanWatch`), and the shards watched that
        long already, re-checked by id."""
        now = time.time()
        usable = self._health.usable()
        await self._orphan_watch.load(self._meta)  # (another holder's, after a restart)
        # A node only down (a missed probe, a network blip) keeps its watch: dropping it
        # cost up to WATCH_MAX store deletes, and the walk put them back when the node
        # returned, so a flapping node's orphans were never deleted (review21a F5); its
        # shards are not checked while it is down. A node removed from the cluster map, or
        # out (down past the out timer, 10 minutes), loses it, so a dead node nobody
        # removed never holds the cap against the live nodes' orphans (review20g F2).
        states = self._health.states
        self._orphan_watch.keep_nodes({n.id for n in self._health.nodes
                                       if n.id in states and states[n.id].state != OUT})
        await asyncio.gather(*(self._orphans_on(node, now) for node in usable))
        await self._orphan_watch.save(self._meta)
        self.stats.orphan_checks += 1
        self.stats.orphans_watched = len(self._orphan_watch)
        self.stats.orphan_watch_oldest_s = round(self._orphan_watch.oldest_s(), 1)
        self._dirty = True

    async def _orphans_on(self, node: NodeSpec, now: float) -> None:
        """One orphan check on one node (nodes are checked concurrently): its shards watched
        for the grace already, then one page of its walk."""
        due = self._orphan_watch.due(node.id, self.settings.orphan_grace_s)
        for sid in due:
            await self._orphan_check(node, sid, now)
        after = self.stats.orphan_cursor.get(node.id, "")
        try:
            ids = await self._client.list_shards(node, after=after, limit=200)
        except StorageError:
            return
        self.stats.orphan_cursor[node.id] = ids[-1] if len(ids) == 200 else ""
        checked = set(due)
        for sid in ids:
            if sid not in checked:
                await self._orphan_check(node, sid, now)
        if len(ids) < 200:
            self._orphan_watch.wrapped(node.id)

    async def _orphan_check(self, node: NodeSpec, sid: str, now: float) -> None:
        """Delete shard `sid` on `node` if no manifest names it, it is older than the grace
        and (an orphan) watched without an owner for as long; a stale copy goes to the
        collector, through its fence, without a watch."""
        watch, grace = self._orphan_watch, self.settings.orphan_grace_s
        try:
            stripe_id, index = parse_shard_id(sid)
        except ValueError:
            return
        owner, man = await shard_owner(self._meta, sid, node.id, self._volume_stripes)
        if owner not in (STALE, ORPHAN):
            watch.forget(node.id, sid)
            return  # named, owned elsewhere (a write settling), or a volume extent
        if owner == STALE:
            watch.forget(node.id, sid)  # (watched as an orphan before its stripe came back)
        elif watch.watched_s(node.id, sid) < grace:
            return  # (a write may still commit it, whatever the wall clocks say)
        try:
            st = await self._client.stat_shard(node, sid)
        except StorageError:
            return
        if st is None:  # gone meanwhile
            watch.forget(node.id, sid)
            return
        if shard_age(st, now) < grace:
            return
        if isinstance(man, Manifest):  # a stale copy: a commit may name it again, so
            # it goes through the collector's fence (storage/workers/gcfence.py)
            await collect_copies(self._meta, stripe_id, {index: node.id})
            watch.forget(node.id, sid)
            self.stats.orphans_deleted += 1
            self._dirty = True
            return
        try:
            await self._client.delete_shard(node, sid)
        except StorageError:
            return
        watch.forget(node.id, sid)
        self.stats.orphans_deleted += 1
        self._dirty = True
        log.info("deleted orphan shard %s on %s", sid, node.id)
