"""The orphan sweep's watch: how long it has seen each shard without an owner, counted on
monotonic clocks only, and kept in the metadata store so that a restarted (or new) repair
lease holder continues it.

Why monotonic (life20): a shard's wall-clock age (its node's clock less its mtime) jumps with
a clock step, and the sweep deleted shards of a write that then committed. A write commits
only within `WriteAge`'s limit of its first shard on the writer's boot clock (`leaseclock`), so a shard
watched without an owner for the grace of real time belongs to no write that can still
commit, whatever the wall clocks say.

Why in the store (orph21; review20g F1): held in memory, the watch began again at every
restart or lease move, so a holder restarting more often than the grace deleted no orphan
at all, and space leaked without an error.

The watch clock `(S, orphan-watch)` `{watched_s, token}` is the seconds of watching counted.
A process counts it on only from a value it wrote itself (its `token` is still there): by
its monotonic time since that write was acknowledged, read before its next write is sent. A
value another process wrote (a restart, a lease move) it takes as it is, reloads the entries,
and counts from then. So the counted time is a sum of disjoint spans of real time, each
measured on one process's monotonic clock, all after the shard was first seen: never more
than the real time since, which is all the safety needs (a write commits only within
`WriteAge` of its first shard). It may count the time between holders: a process that gets
the lease back while the stored token is still its own (the holder in between saved
nothing) counts on from its own write, through the gap (review21a F4): real time that
passed all the same. A new process never counts the gap. Each watched shard is
`(OW, node id, shard id)` `{since}`, the watch clock when it was first seen. Not capped per
step: a pause of a process that still holds the lease is real time passing (the writer's
boot clock counts it too); one that lost its lease cannot write (its step's fence), and
the next holder's token drops what it counted.

Bounded: at most `WATCH_MAX` entries; a shard seen owned, deleted or gone is forgotten, and so
is one a node's whole walk (`wrapped`) did not meet, and every shard of a node removed from
the cluster map or out (`keep_nodes`; a node only down keeps its entries). The store mirrors
the memory: changes are written at the end of each orphan check (`save`), the watch clock's
compare-and-swap first.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from storage.keyspace import ORPHAN_WATCH, next_key, orphan_watch_key, space, system_key
from storage.keyspace import unpack as unpack_key
from storage.metadata import MetadataStore, Txn
from storage.records import pack, unpack

WATCH_MAX = 100_000  # shards without an owner remembered at once (20 MB: tracemalloc)
RECHECK = 200  # watched shards re-checked by id per node per pass once their grace passed
CLOCK_KEY = system_key("orphan-watch")
SAVE_OPS = 100  # entry puts and deletes per transaction (etcd takes at most 128 operations)
PAGE = 1000


class OrphanWatch:
    """When the sweep first saw each shard without an owner, on the watch clock.

    A delete needs both this watch and the wall-clock age (`shard_age`) to reach the grace.
    Entries are kept per node in the order first seen, so a node's wrap touches only its own
    entries, and the shards due (`due`) and the oldest (`oldest_s`) are found at the front;
    past the limit new shards wait for room."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 limit: int = WATCH_MAX) -> None:
        self.clock = clock
        self._limit = limit
        self._first: dict[str, dict[str, tuple[float, int]]] = {}  # node -> sid -> (seen, walk)
        self._walk: dict[str, int] = {}  # node -> walks over its shards begun
        self._count = 0
        self._base, self._mark = 0.0, 0.0  # the watch clock was `_base` at clock() `_mark`
        self._token = ""  # of the watch clock record this process wrote last
        self._revision = 0  # that record's revision as last read
        self._changes: dict[tuple[str, str], float | None] = {}  # to store (None: delete)

    def __len__(self) -> int:
        return self._count

    def now(self) -> float:
        """The watch clock: seconds of watching counted so far."""
        return self._base + max(0.0, self.clock() - self._mark)

    def watched_s(self, node_id: str, sid: str) -> float:
        """Seconds `sid` on `node_id` has been watched without an owner (0 when first seen)."""
        now, walk = self.now(), self._walk.get(node_id, 0)
        mine = self._first.setdefault(node_id, {})
        first = mine.get(sid)
        if first is None:
            if self._count >= self._limit:
                return 0.0
            self._count += 1
            self._changes[(node_id, sid)] = now
        since = now if first is None else first[0]
        mine[sid] = (since, walk)
        return now - since

    def forget(self, node_id: str, sid: str) -> None:
        mine = self._first.get(node_id)
        if mine is not None and mine.pop(sid, None) is not None:
            self._count -= 1
            self._changes[(node_id, sid)] = None

    def wrapped(self, node_id: str) -> None:
        """A walk over `node_id`'s shards ended: forget its shards the walk did not meet."""
        walk = self._walk.get(node_id, 0)
        for sid, (_, seen_in) in list(self._first.get(node_id, {}).items()):
            if seen_in != walk:
                self.forget(node_id, sid)
        self._walk[node_id] = walk + 1

    def keep_nodes(self, node_ids: set[str]) -> None:
        """Forget the shards of nodes not among `node_ids` (the cluster map's nodes that are
        not out: the others were removed, or are down past the out timer). A node that is
        only down keeps its entries: its shards are not checked until it is back, and the
        time it was down counts (real time passed since first sight; the delete path reads
        the owner and the node-side age afresh)."""
        for node_id in [n for n in self._first if n not in node_ids]:
            for sid in list(self._first[node_id]):
                self.forget(node_id, sid)
            del self._first[node_id]
            self._walk.pop(node_id, None)

    def due(self, node_id: str, grace_s: float, limit: int = RECHECK) -> list[str]:
        """Up to `limit` of `node_id`'s shards watched for `grace_s` already, oldest first."""
        until, out = self.now() - grace_s, []
        for sid, (since, _) in self._first.get(node_id, {}).items():
            if since > until or len(out) >= limit:
                break
            out.append(sid)
        return out

    def oldest_s(self) -> float:
        """How long the longest-watched shard has been watched (0 when none is)."""
        firsts = [next(iter(m.values()))[0] for m in self._first.values() if m]
        return self.now() - min(firsts) if firsts else 0.0

    # the store ---------------------------------------------------------------------------

    async def load(self, meta: MetadataStore) -> None:
        """Before an orphan check: take the stored watch unless this process wrote it last."""
        item = await meta.get(CLOCK_KEY)
        rec = unpack(item.value) if item is not None else {}
        self._revision = item.revision if item is not None else 0
        if self._token and rec.get("token") == self._token:
            return  # the store holds what this process holds
        self._base, self._mark, self._token = float(rec.get("watched_s", 0.0)), self.clock(), ""
        self._changes.clear()
        found: dict[str, list[tuple[float, str]]] = {}
        start, end = space(ORPHAN_WATCH)
        while True:
            page = await meta.range(start, end, limit=PAGE)
            for it in page:
                _, node_id, sid = unpack_key(it.key)
                found.setdefault(node_id, []).append((float(unpack(it.value)["since"]), sid))
            if len(page) < PAGE:
                break
            start = next_key(page[-1].key)
        self._first, self._count = {}, 0
        for node_id, got in sorted(found.items()):
            walk, mine = self._walk.get(node_id, 0), self._first.setdefault(node_id, {})
            for since, sid in sorted(got):  # (as met by this walk: the next wrap may drop it)
                if self._count < self._limit:
                    mine[sid] = (since, walk)
                    self._count += 1
                else:
                    self._changes[(node_id, sid)] = None

    async def save(self, meta: MetadataStore) -> None:
        """After an orphan check: the watch clock (compare-and-swap on the record this
        process read), then the entries it changed. Refused (another process wrote the
        clock): nothing is saved, and the next `load` takes the store's watch. Nothing
        watched and nothing changed (no orphans, the usual case): no write at all."""
        if not self._changes and not self._count:
            return
        watched, token = self.now(), secrets.token_hex(8)  # (read before the write is sent)
        changes, self._changes = list(self._changes.items()), {}
        chunks = [changes[i:i + SAVE_OPS] for i in range(0, len(changes), SAVE_OPS)] or [[]]
        clock = {CLOCK_KEY: pack({"watched_s": watched, "token": token})}
        self._token = ""
        try:
            if not await meta.txn(_entries(chunks[0], {CLOCK_KEY: self._revision}, clock)):
                return
            self._base, self._mark, self._token = watched, self.clock(), token
            for chunk in chunks[1:]:
                await meta.txn(_entries(chunk, {}, {}))
        except BaseException:
            self._token = ""  # (the store may hold less than memory: load it again)
            raise


def _entries(chunk: list[tuple[tuple[str, str], float | None]], compares: dict[bytes, int],
             puts: dict[bytes, bytes]) -> Txn:
    puts = {**puts, **{orphan_watch_key(n, s): pack({"since": v})
                       for (n, s), v in chunk if v is not None}}
    return Txn(compares, puts, tuple(orphan_watch_key(n, s) for (n, s), v in chunk if v is None))
