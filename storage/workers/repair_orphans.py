"""Repair's housekeeping: quarantine reports from the nodes, and orphaned shards.

The node scrubbers (and reads) quarantine corrupt shards: their stripes are queued for
repair. Shards no manifest names (no stripe index entry, or a stale copy the manifest no
longer names) are deleted once older than the orphan grace and watched by this sweep without
an owner for as long on its monotonic clock (`OrphanWatch`), one page per node per pass, and
the shards watched for the grace already re-checked by id at each pass (not a whole walk
later); a stale copy of a live stripe is queued for the collector instead, whose fence keeps
it from deleting a copy a commit names meanwhile (it takes no place in the watch).

The watch is in memory: a repair lease holder that restarts (or whose lease moves) more often
than the grace plus one orphan check never deletes an orphan; `orphans_watched` and
`orphan_watch_oldest_s` (published stats, gauges) show it. The walk's position is published
(`orphan_cursor`), so a restart does not start every node's walk again.
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
WATCH_MAX = 100_000  # shards without an owner remembered at once (20 MB: tracemalloc)
RECHECK = 200  # watched shards re-checked by id per node per pass once their grace passed


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
    walk (`wrapped`) did not meet, and every shard of a node no longer walked (`keep_nodes`);
    past `WATCH_MAX` new shards wait for room. Entries are kept per node, in the order first
    seen, so a node's wrap touches only its own entries, and the shards due (`due`) and the
    oldest (`oldest_s`) are found at the front."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 limit: int = WATCH_MAX) -> None:
        self.clock = clock
        self._limit = limit
        self._first: dict[str, dict[str, tuple[float, int]]] = {}  # node -> sid -> (seen, walk)
        self._walk: dict[str, int] = {}  # node -> walks over its shards begun
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def watched_s(self, node_id: str, sid: str) -> float:
        """Seconds since this sweep first saw `sid` on `node_id` without an owner (0 now)."""
        now, walk = self.clock(), self._walk.get(node_id, 0)
        mine = self._first.setdefault(node_id, {})
        first = mine.get(sid)
        if first is None:
            if self._count >= self._limit:
                return 0.0
            self._count += 1
        since = now if first is None else first[0]
        mine[sid] = (since, walk)
        return now - since

    def forget(self, node_id: str, sid: str) -> None:
        mine = self._first.get(node_id)
        if mine is not None and mine.pop(sid, None) is not None:
            self._count -= 1

    def wrapped(self, node_id: str) -> None:
        """A walk over `node_id`'s shards ended: forget its shards the walk did not meet."""
        walk = self._walk.get(node_id, 0)
        mine = self._first.get(node_id, {})
        kept = {sid: v for sid, v in mine.items() if v[1] == walk}
        self._count -= len(mine) - len(kept)
        self._first[node_id] = kept
        self._walk[node_id] = walk + 1

    def keep_nodes(self, node_ids: set[str]) -> None:
        """Forget the shards of nodes not among `node_ids` (removed, or down: not walked);
        their watch starts again when they are walked again."""
        for node_id in [n for n in self._first if n not in node_ids]:
            self._count -= len(self._first.pop(node_id))
            self._walk.pop(node_id, None)

    def due(self, node_id: str, grace_s: float, limit: int = RECHECK) -> list[str]:
        """Up to `limit` of `node_id`'s shards watched for `grace_s` already, oldest first."""
        until, out = self.clock() - grace_s, []
        for sid, (since, _) in self._first.get(node_id, {}).items():
            if since > until or len(out) >= limit:
                break
            out.append(sid)
        return out

    def oldest_s(self) -> float:
        """How long the longest-watched shard has been watched (0 when none is)."""
        firsts = [next(iter(m.values()))[0] for m in self._first.values() if m]
        return self.clock() - min(firsts) if firsts else 0.0


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
        self._orphan_watch.keep_nodes({node.id for node in usable})
        await asyncio.gather(*(self._orphans_on(node, now) for node in usable))
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
