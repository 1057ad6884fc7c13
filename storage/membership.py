"""Cluster membership: the config's static node list plus an overlay kept in metadata.

`(M, node id)` records hold a node's membership state (`active`, `draining`, `removed`) and,
for nodes added at run time, their zone, address, role and weight. The effective cluster map
is the config's `[[nodes]]` merged with these records: removed nodes drop out, added nodes
join. New placements (writes, repair, rebalancing) use only active nodes; draining nodes stay
readable until the rebalancer has moved every shard off them. Every process that opens a
`Cluster` refreshes the overlay periodically and applies it to its health tracker, which is
the live cluster map reads and writes consult.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from storage.config import NODE_ID, NODE_ROLES, Config, NodeSpec
from storage.errors import Conflict, InvalidInput, NotFound
from storage.health import HealthTracker
from storage.keyspace import MEMBER, member_epoch_key, member_key, space
from storage.keyspace import unpack as unpack_key
from storage.metadata import MetadataStore, Txn
from storage.records import pack, unpack
from storage.workers.wakes import Wakes

ACTIVE, DRAINING, REMOVED = "active", "draining", "removed"
STATES = (ACTIVE, DRAINING, REMOVED)
REFRESH_S = 2.0
WATCHED_REFRESH_S = 10.0  # the fallback re-read when a watch wakes the watcher
log = logging.getLogger("tessera.membership")


@dataclass(frozen=True)
class Member:
    """One node of the effective cluster map and its membership state."""

    spec: NodeSpec
    state: str = ACTIVE
    since: float = 0.0
    added: bool = False  # joined at run time (not in the config file)
    revision: int = 0  # its `M` record's revision (0: none, a config node never changed)

    def to_dict(self) -> dict:
        s = self.spec
        return {"id": s.id, "zone": s.zone, "address": s.address, "role": s.role,
                "weight": s.weight, "membership": self.state, "since": self.since,
                "added": self.added}


async def load_members(meta: MetadataStore, cfg: Config) -> list[Member]:
    """The config's nodes merged with the `M` overlay, removed nodes included."""
    return (await load_map(meta, cfg))[0]


async def load_map(meta: MetadataStore, cfg: Config) -> tuple[list[Member], int]:
    """`load_members` and the revision of the membership epoch record (0: none), read in
    one range: the epoch is the one of exactly these members."""
    items = await meta.range(*space(MEMBER), limit=10000)
    epoch_key = member_epoch_key()
    epoch = next((it.revision for it in items if it.key == epoch_key), 0)
    items = [it for it in items if it.key != epoch_key]
    records = {unpack_key(it.key)[1]: unpack(it.value) for it in items}
    revs = {unpack_key(it.key)[1]: it.revision for it in items}
    out: list[Member] = []
    for n in cfg.nodes:
        r = records.pop(n.id, {})
        out.append(Member(n, str(r.get("state", ACTIVE)), float(r.get("since", 0.0)),
                          revision=revs.get(n.id, 0)))
    for nid, r in sorted(records.items()):
        try:
            spec = NodeSpec(id=nid, zone=str(r["zone"]), address=str(r["address"]),
                            role=str(r.get("role", "standard")),
                            weight=float(r.get("weight", 1.0)))
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring malformed membership record for %s", nid)
            continue
        out.append(Member(spec, str(r.get("state", ACTIVE)), float(r.get("since", 0.0)),
                          added=True, revision=revs[nid]))
    return out, epoch


async def get_member(meta: MetadataStore, cfg: Config, node_id: str) -> Member:
    for m in await load_members(meta, cfg):
        if m.spec.id == node_id:
            return m
    raise NotFound(f"node {node_id!r} is not in the cluster map")


async def set_state(meta: MetadataStore, cfg: Config, node_id: str, state: str,
                    expect: Member | None = None) -> Member:
    """Change a node's membership state (compare-and-swap on its record). With `expect`,
    only while the record is still in that member's state since that same moment: a
    decision taken on what `expect` showed (a forced removal's plan) is never applied over
    a change made meanwhile (an `activate`, or a drain begun again)."""
    if state not in STATES:
        raise InvalidInput(f"membership state must be one of {STATES}")
    key = member_key(node_id)
    for _ in range(8):
        m = await get_member(meta, cfg, node_id)
        if m.state == REMOVED:
            raise Conflict(f"node {node_id!r} was removed")
        item = await meta.get(key)
        rec = unpack(item.value) if item else {}
        now = (str(rec.get("state", ACTIVE)), float(rec.get("since", 0.0)))
        if expect is not None and now != (expect.state, expect.since):  # the txn compares
            # this very record's revision, so what is checked here is what is replaced
            raise Conflict(f"node {node_id!r} changed meanwhile (now {now[0]}, was "
                           f"{expect.state}); check `tessera node list` and try again")
        rec = {**rec, "state": state, "since": time.time()}
        puts = {key: pack(rec)}
        if state == REMOVED:  # commits naming it fail from now on (`commit_nodes`)
            puts[member_epoch_key()] = pack({"removed": node_id, "at": rec["since"]})
        if await meta.txn(Txn(compares={key: item.revision if item else 0}, puts=puts)):
            return Member(m.spec, state, rec["since"], m.added)
    raise Conflict(f"node {node_id!r} changed concurrently; try again")


def _valid_address(addr: str) -> bool:
    host, sep, port = addr.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def check_new_node(members: list[Member], spec: NodeSpec) -> None:
    """Refuse a malformed node or one whose id or address the cluster map already has."""
    if not NODE_ID.match(spec.id):
        raise InvalidInput("node ids are 1-63 letters, digits, '.', '_' or '-'")
    if not spec.zone or not _valid_address(spec.address):
        raise InvalidInput("a node needs a zone and an address HOST:PORT")
    if spec.role not in NODE_ROLES:
        raise InvalidInput(f"role must be one of {NODE_ROLES}")
    if not spec.weight > 0:
        raise InvalidInput("weight must be positive")
    for m in members:
        if m.spec.id == spec.id:
            why = ("removed; an id is never reused: start the node under a new --id on an "
                   "empty --data directory and add that id") if m.state == REMOVED else m.state
            raise Conflict(f"node {spec.id!r} is already in the cluster map ({why})")
        if m.spec.address == spec.address and m.state != REMOVED:
            raise Conflict(f"address {spec.address} is already used by node {m.spec.id!r}")


async def add_node(meta: MetadataStore, cfg: Config, spec: NodeSpec) -> Member:
    """Add a node to the cluster map as active (eligible for new placements at once)."""
    check_new_node(await load_members(meta, cfg), spec)
    now = time.time()
    rec = {"state": ACTIVE, "since": now, "zone": spec.zone, "address": spec.address,
           "role": spec.role, "weight": spec.weight}
    if not await meta.txn(Txn(compares={member_key(spec.id): 0},
                              puts={member_key(spec.id): pack(rec)})):
        raise Conflict(f"node {spec.id!r} is already in the cluster map")
    return Member(spec, ACTIVE, now, added=True)


def apply(health: HealthTracker, members: list[Member], epoch: int = -1) -> None:
    """Make the health tracker's node list the effective cluster map (`epoch`: the
    membership epoch read with `members`, -1 if unknown: commits then re-read the map)."""
    live = [m for m in members if m.state != REMOVED]
    health.set_nodes([m.spec for m in live],
                     placeable={m.spec.id for m in live if m.state == ACTIVE}, epoch=epoch)


async def refresh(meta: MetadataStore, cfg: Config, health: HealthTracker) -> list[Member]:
    members, epoch = await load_map(meta, cfg)
    apply(health, members, epoch)
    return members


class MembershipWatcher:
    """Re-reads the overlay every few seconds so every process sees adds and drains; on a
    store that watches (etcd) when an `(M, …)` record changes instead, and every
    `WATCHED_REFRESH_S` in case a change fell in a gap of the watch."""

    def __init__(self, meta: MetadataStore, cfg: Config, health: HealthTracker,
                 interval_s: float = REFRESH_S) -> None:
        self._meta = meta
        self._cfg = cfg
        self._health = health
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None
        self._wakes = Wakes(meta)

    async def _run(self) -> None:
        waiter = self._wakes.waiter(space(MEMBER)[0])
        while True:
            if waiter is None:
                await asyncio.sleep(self._interval)
            else:
                await waiter.wait(max(self._interval, WATCHED_REFRESH_S))
                waiter.arm()  # a change made while it reads wakes the next wait
            try:
                await refresh(self._meta, self._cfg, self._health)
            except Exception:  # noqa: BLE001 - a metadata hiccup must not stop refreshing
                log.warning("membership refresh failed", exc_info=True)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="membership")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._wakes.stop()


__all__ = ["ACTIVE", "DRAINING", "REMOVED", "Member", "MembershipWatcher", "add_node", "apply",
           "check_new_node", "get_member", "load_map", "load_members", "member_key", "refresh", "set_state"]
