"""Admin routes for cluster membership: list, add, drain, reactivate and remove nodes.

    GET    /admin/v1/nodes[?all=1]          the cluster map with health, shards, drain progress
    POST   /admin/v1/nodes {"id","zone","address","role","weight"}   add (the node must answer)
    POST   /admin/v1/nodes/{id}/drain       stop new placements; the rebalancer moves shards off
    POST   /admin/v1/nodes/{id}/activate    cancel a drain
    DELETE /admin/v1/nodes/{id}             remove (refused while the node holds shards)
    DELETE /admin/v1/nodes/{id}?force=1[&dry_run=1]   remove a draining node that still holds
                                            shards no stripe needs (`force_plan`)
    GET    /admin/v1/nodes/{id}/lost-packs  packs the node found lost at its start, still reported
    POST   /admin/v1/nodes/{id}/lost-packs/ack[?packs=3,4]   stop reporting them (all by default)

Signed and audited like every admin route (`AdminApi._wrap`). Changes apply to this gateway at
once and to other processes within the membership refresh interval.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from gateway.admin.api import PREFIX, AdminApi, Call
from gateway.admin.auth import AdminError
from gateway.admin.unsettled import Unsettled
from storage import membership as ms
from storage.config import NodeSpec, validate_layout
from storage.errors import ConfigError, StorageError
from storage.shards.client import NodeError
from storage.shards.packlist import PACKS_FORMAT, parse_packs
from storage.workers.rebalance import read_stats


class NodesApi:
    def __init__(self, api: AdminApi) -> None:
        self.api = api
        self.cluster = api.cluster

    def register(self, app: web.Application) -> None:
        w = self.api._wrap
        app.router.add_route("GET", PREFIX + "/nodes", w("node.list", self.list))
        app.router.add_route("POST", PREFIX + "/nodes", w("node.add", self.add))
        app.router.add_route("POST", PREFIX + "/nodes/{id}/drain", w("node.drain", self.drain))
        app.router.add_route("POST", PREFIX + "/nodes/{id}/activate",
                             w("node.activate", self.activate))
        app.router.add_route("DELETE", PREFIX + "/nodes/{id}", w("node.remove", self.remove))
        app.router.add_route("GET", PREFIX + "/nodes/{id}/lost-packs",
                             w("node.lost_packs", self.lost_packs))
        app.router.add_route("POST", PREFIX + "/nodes/{id}/lost-packs/ack",
                             w("node.ack_lost_packs", self.ack_lost_packs))

    async def _refresh(self) -> list[ms.Member]:
        c = self.cluster
        return await ms.refresh(c.meta, c.cfg, c.health)

    async def _member(self, call: Call) -> ms.Member:
        nid = call.param("id")
        call.audit["node"] = nid
        for m in await self._refresh():
            if m.spec.id == nid:
                return m
        raise AdminError(404, "NoSuchNode", f"node {nid!r} is not in the cluster map; see "
                         "`tessera node list`")

    async def view(self, m: ms.Member, stats: dict[str, Any]) -> dict[str, Any]:
        s = self.cluster.health.states.get(m.spec.id)
        d = (stats.get("draining") or {}).get(m.spec.id, {})
        row = {**m.to_dict(), "state": s.state if s and m.state != ms.REMOVED else "-",
               "shards": s.shards if s else 0, "used_bytes": s.used_bytes if s else 0,
               "free_bytes": s.free_bytes if s else 0}
        if m.state == ms.DRAINING:
            drained = m.spec.id in (stats.get("drained") or [])
            row["drain"] = {"left": d.get("left"), "moved": int(d.get("moved", 0)),
                            "drained": drained}
            if drained:  # `node drain --wait` ends on this count: the node's own, not the
                try:     # health tracker's last one (stale: a drained node holding shards
                    health = await self.cluster.nodes.health(m.spec)  # read 0)
                    row["shards"] = int(health.get("shards", 0))
                except StorageError:
                    pass
        return row

    async def list(self, call: Call) -> tuple[int, Any]:
        members = await self._refresh()
        everyone = call.request.query.get("all") in ("1", "true")
        stats = await read_stats(self.cluster.meta)
        rows = [await self.view(m, stats) for m in members if everyone or m.state != ms.REMOVED]
        return 200, {"nodes": rows, "rebalance": stats}

    async def lost_packs(self, call: Call) -> tuple[int, Any]:
        """The packs a node found lost (`nodes.packdrops`) and still reports: their shards
        were missing there; the repair sweep clears the report once they are all rebuilt."""
        m = await self._member(call)
        h = await self._node_health(m)
        return 200, {"node": m.spec.id, "packs_lost": h.get("packs_lost", []),
                     "packs_missing": int(h.get("packs_missing", 0))}

    async def ack_lost_packs(self, call: Call) -> tuple[int, Any]:
        """Tell a node its lost packs (`?packs=3,4`, else every one it reports) are dealt
        with: it stops reporting them, at once and after restarts."""
        m = await self._member(call)
        raw = call.request.query.get("packs")
        if raw is None:
            packs = [int(x) for x in (await self._node_health(m)).get("packs_lost", [])]
        elif (asked := parse_packs(raw)) is not None:
            packs = asked
        else:
            raise AdminError(400, "InvalidArgument", PACKS_FORMAT)
        call.audit["packs"] = packs
        try:
            done = await self.cluster.nodes.ack_lost_packs(m.spec, packs) if packs else []
        except NodeError as exc:
            if exc.status is not None and 400 <= exc.status < 500:  # refused, not unreachable
                raise AdminError(400, "InvalidArgument", f"node {m.spec.id!r} refused the "
                                 f"acknowledgement: {exc}") from None
            raise AdminError(503, "NodeUnreachable", f"node {m.spec.id!r}: {exc}") from None
        except StorageError as exc:
            raise AdminError(503, "NodeUnreachable", _unreachable(m.spec.id, exc)) from None
        call.audit["acknowledged"] = done
        h = await self._node_health(m)
        return 200, {"node": m.spec.id, "acknowledged": done,
                     "packs_lost": h.get("packs_lost", []),
                     "packs_missing": int(h.get("packs_missing", 0))}

    async def _node_health(self, m: ms.Member) -> dict[str, Any]:
        try:
            return await self.cluster.nodes.health(m.spec, timeout_s=3.0)
        except StorageError as exc:
            raise AdminError(503, "NodeUnreachable", _unreachable(m.spec.id, exc)) from None

    def _check_layout(self, members: list[ms.Member], leaving: str) -> None:
        """Refuse a change that leaves too few active nodes for a profile in use."""
        cfg = self.cluster.cfg
        active = tuple(m.spec for m in members if m.state == ms.ACTIVE and m.spec.id != leaving)
        for name in sorted({cfg.default_profile, *cfg.storage_classes.values()}):
            try:
                validate_layout(cfg.profile(name), active)
            except ConfigError as exc:
                raise AdminError(409, "LayoutTooSmall", f"without node {leaving!r}: {exc}; add "
                                 "a node first") from None

    async def add(self, call: Call) -> tuple[int, Any]:
        b = call.body
        for f in ("id", "zone", "address"):
            if not isinstance(b.get(f), str) or not b[f]:
                raise AdminError(400, "InvalidArgument", f"the body needs a non-empty string field {f!r}")
        weight = b.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise AdminError(400, "InvalidArgument", "weight must be a number")
        spec = NodeSpec(id=b["id"], zone=b["zone"], address=b["address"],
                        role=str(b.get("role") or "standard"), weight=float(weight))
        call.audit.update({"node": spec.id, "zone": spec.zone, "address": spec.address})
        ms.check_new_node(await self._refresh(), spec)
        try:
            h = await self.cluster.nodes.health(spec, timeout_s=3.0)
        except StorageError as exc:
            raise AdminError(409, "NodeUnreachable", f"node {spec.id!r} does not answer at "
                             f"{spec.address} with the cluster secret ({exc}); start it first "
                             "(tessera node --id ID --listen HOST:PORT --zone Z --data DIR "
                             "--secret-file FILE, FILE a copy of this cluster's "
                             f"{self.cluster.cfg.secret_path})") from None
        if h.get("zone") not in (None, spec.zone):
            raise AdminError(409, "ZoneMismatch", f"node {spec.id!r} says it is in zone "
                             f"{h.get('zone')!r}, not {spec.zone!r}")
        m = await ms.add_node(self.cluster.meta, self.cluster.cfg, spec)
        await self._refresh()
        await self.cluster.health.probe_once()
        return 201, await self.view(m, {})

    async def drain(self, call: Call) -> tuple[int, Any]:
        m = await self._member(call)
        if m.state == ms.REMOVED:
            raise AdminError(409, "NodeRemoved", f"node {m.spec.id!r} was removed, for good; "
                             "add a new node instead (`tessera node add`)")
        if m.state != ms.DRAINING:
            self._check_layout(await self._refresh(), m.spec.id)
            m = await ms.set_state(self.cluster.meta, self.cluster.cfg, m.spec.id, ms.DRAINING)
            await self._refresh()
        return 200, await self.view(m, await read_stats(self.cluster.meta))

    async def activate(self, call: Call) -> tuple[int, Any]:
        m = await self._member(call)
        if m.state == ms.REMOVED:
            raise AdminError(409, "NodeRemoved", f"node {m.spec.id!r} was removed, for good; "
                             "add a new node instead (`tessera node add`)")
        if m.state != ms.ACTIVE:
            m = await ms.set_state(self.cluster.meta, self.cluster.cfg, m.spec.id, ms.ACTIVE)
            await self._refresh()
        return 200, await self.view(m, await read_stats(self.cluster.meta))

    async def force_plan(self, m: ms.Member) -> dict[str, Any]:
        """What removing draining node `m` now would abandon, from every shard it lists:
        copies no stripe needs (orphans of unfinished writes or deletes, stale copies of
        moved shards, which the collectors would delete after their grace) are abandoned
        on its disk. An AdminError when a shard is still needed or cannot be vouched for
        (named by a stripe, a write settling, a volume extent): nothing acknowledged is
        ever dropped, so the drain (or the write) must finish first."""
        from storage.workers.manifests import volume_stripes
        from storage.workers.repair_orphans import NAMED, ORPHAN, STALE, shard_owner

        nid = m.spec.id
        if m.state != ms.DRAINING:
            raise AdminError(409, "NodeNotDrained", f"node {nid!r} is not draining; --force "
                             "only removes a drained node's leftovers: run `tessera node "
                             f"drain {nid} --wait` first")
        c = self.cluster
        vols = await volume_stripes(c.meta)
        counts: dict[str, int] = {}
        needed: list[str] = []
        unsettled = Unsettled(c.cfg.repair.orphan_grace_s)
        after = ""
        while True:
            try:
                ids = await c.nodes.list_shards(m.spec, after=after, limit=1000)
            except StorageError as exc:
                raise AdminError(409, "NodeUnreachable", f"node {nid!r} did not list its "
                                 f"shards ({exc}); --force needs to see what it would "
                                 "abandon: bring it back, or wait until `tessera node list` "
                                 "shows it drained (a drained node may go unreachable)") from None
            for sid in ids:
                owner, _ = await shard_owner(c.meta, sid, nid, vols)
                counts[owner] = counts.get(owner, 0) + 1
                if owner == ORPHAN:
                    await unsettled.check(c, m.spec, sid)
                if owner not in (ORPHAN, STALE) and len(needed) < 10:
                    needed.append(f"{sid} ({owner})")
            if len(ids) < 1000:
                break
            after = ids[-1]
        kept = sum(v for k, v in counts.items() if k not in (ORPHAN, STALE))
        if kept:
            why = {NAMED: "named by a stripe: the drain has not moved it yet"}
            raise AdminError(409, "NodeNotEmpty", f"node {nid!r} still holds {kept} shard(s) "
                             "that data needs or that cannot be vouched for ("
                             + ", ".join(f"{n} {why.get(k, k)}" for k, n in counts.items()
                                         if k not in (ORPHAN, STALE))
                             + f"; e.g. {', '.join(needed)}); --force would drop them: wait "
                             f"for the drain (`tessera node drain {nid} --wait`)")
        await self._check_drained(m)
        await unsettled.refuse(c.meta, nid)
        return {"id": nid, "orphans": counts.get(ORPHAN, 0), "stale": counts.get(STALE, 0),
                "abandoned": counts.get(ORPHAN, 0) + counts.get(STALE, 0)}

    async def _check_drained(self, m: ms.Member) -> None:
        """--force needs the drain done (a rebalancer pass found nothing named on the node)
        and older than the longest interval at which any gateway re-reads the cluster map
        (`WATCHED_REFRESH_S`): until then a gateway may still place new writes on it."""
        nid = m.spec.id
        stats = await read_stats(self.cluster.meta)
        d = (stats.get("draining") or {}).get(nid) or {}
        if nid not in (stats.get("drained") or []) or float(d.get("since", m.since)) != m.since:
            raise AdminError(409, "NodeNotDrained", f"node {nid!r} is still being drained; "
                             f"--force waits until it is drained: `tessera node drain {nid} "
                             "--wait`, then try again")
        wait_s = m.since + ms.WATCHED_REFRESH_S - time.time()
        if wait_s > 0:
            raise AdminError(409, "NodeNotDrained", f"node {nid!r} has been draining for less "
                             f"than {ms.WATCHED_REFRESH_S:g} s, the interval at which every "
                             "gateway re-reads the cluster map, so a gateway may still place "
                             f"writes on it; try again in {wait_s:.0f} s")

    async def remove(self, call: Call) -> tuple[int, Any]:
        m = await self._member(call)
        nid = m.spec.id
        if m.state == ms.REMOVED:  # idempotent, but says nothing changed (--force too)
            call.audit["already_removed"] = True
            return 200, {**m.to_dict(), "already_removed": True}
        if call.request.query.get("force") in ("1", "true"):
            plan = await self.force_plan(m)
            call.audit["force"] = plan
            if call.request.query.get("dry_run") in ("1", "true"):
                call.audit["dry_run"] = True  # audited "ok" like the removal: say it was not one
                return 200, {**m.to_dict(), "force": plan, "dry_run": True}
            # only if still draining since the moment the plan saw (not activated meanwhile)
            m = await ms.set_state(self.cluster.meta, self.cluster.cfg, nid, ms.REMOVED,
                                   expect=m)
            await self._refresh()
            return 200, {**m.to_dict(), "force": plan}
        stats = await read_stats(self.cluster.meta)
        drained = m.state == ms.DRAINING and nid in (stats.get("drained") or [])
        if m.state == ms.ACTIVE:
            self._check_layout(await self._refresh(), nid)
        try:
            shards: int | None = int((await self.cluster.nodes.health(m.spec)).get("shards", 0))
        except StorageError:
            shards = None  # unreachable: only a drained node may go
        if shards is None and not drained:
            raise AdminError(409, "NodeNotEmpty", f"node {nid!r} cannot be reached and has not "
                             f"been drained; run `tessera node drain {nid}` and wait until "
                             "`tessera node list` shows 0 shards left")
        if shards and drained:  # what is left no stripe names: it waits for collection
            cfg = self.cluster.cfg
            raise AdminError(409, "NodeNotEmpty", f"node {nid!r} is drained but still holds "
                             f"{shards} shards no stripe uses any more, which the collector "
                             f"deletes after [workers] gc_grace_s ({cfg.workers.gc_grace_s:g} "
                             "s; orphans of unfinished writes after [repair] orphan_grace_s, "
                             f"{cfg.repair.orphan_grace_s:g} s); run `tessera node remove "
                             f"{nid}` again once `tessera node list` shows 0 shards")
        if shards:
            left = ((stats.get("draining") or {}).get(nid) or {}).get("left")
            hint = (f"the drain is in progress ({left} referenced shards left)"
                    if m.state == ms.DRAINING else f"run `tessera node drain {nid}` first")
            raise AdminError(409, "NodeNotEmpty", f"node {nid!r} still holds {shards} shards; "
                             f"{hint}")
        if m.state == ms.DRAINING and not drained:
            raise AdminError(409, "NodeNotEmpty", f"node {nid!r} is still being drained; wait "
                             "until `tessera node list` shows it drained")
        m = await ms.set_state(self.cluster.meta, self.cluster.cfg, nid, ms.REMOVED)
        await self._refresh()
        return 200, m.to_dict()


def register_nodes(app: web.Application, api: AdminApi) -> None:
    """Add the membership routes (before the admin API's catch-all route)."""
    NodesApi(api).register(app)


def _unreachable(node: str, exc: Exception) -> str:
    """A node that did not answer a question only it can answer (its lost packs): says what
    to do next, start it and ask again, instead of only the connection error (newuser22)."""
    return (f"node {node!r} does not answer ({exc}); only the node itself knows its lost "
            f"packs: start it (`tessera node list` shows its health), then ask again")
