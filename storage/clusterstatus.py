"""The cluster's durability picture as one document: what `tessera status` and the console show.

Zones, nodes with their state and capacity, stripes by number of healthy shards (a bounded scan
of the stripe index judged by node state, plus the repair sweep's last full pass, which stats
every shard), repair and GC backlogs, scrub progress per node and an annual durability estimate
(see storage/durability.py for the model and its assumptions).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from storage.archive import class_figures
from storage.cluster import Cluster
from storage.durability import DurabilityInputs, combined_loss, estimate, metadata_estimate
from storage.errors import StorageError
from storage.health import UP
from storage.keyspace import GC, REPAIR, STRIPE, space, stripe_of
from storage.lying import read_integrity
from storage.membership import load_members
from storage.node_reason import node_reason
from storage.records import unpack
from storage.workers.manifests import KEPT_STATES, load_manifest
from storage.workers.rebalance import read_stats as read_rebalance_stats
from storage.workers.repair import read_stats, refused_alarm

SCAN_LIMIT = 5000
COUNT_LIMIT = 100_000
ALARMS_SHOWN = 20


async def _count(cluster: Cluster, start: bytes, end: bytes) -> tuple[int, bool]:
    items = await cluster.meta.range(start, end, limit=COUNT_LIMIT + 1)
    return min(len(items), COUNT_LIMIT), len(items) > COUNT_LIMIT


async def _repair_queue(cluster: Cluster) -> tuple[int, bool, list[dict[str, Any]]]:
    """The repair backlog (bounded count) and the entries whose rebuild keeps being refused
    (`workers.repair.refused_alarm`; the first ALARMS_SHOWN)."""
    items = await cluster.meta.range(*space(REPAIR), limit=COUNT_LIMIT + 1)
    alarms = []
    for it in items[:COUNT_LIMIT]:
        alarm = refused_alarm(it.key, unpack(it.value))
        if alarm is not None and len(alarms) < ALARMS_SHOWN:
            alarms.append(alarm)
    return min(len(items), COUNT_LIMIT), len(items) > COUNT_LIMIT, alarms


async def _stripe_health(cluster: Cluster) -> dict[str, Any]:
    """Stripes by healthy shards (shards on usable nodes), from a bounded X/ scan, and what
    losing each zone now would leave of them (`zone_loss`: per zone, stripes still redundant,
    readable with no margin, unreadable until the zone returns)."""
    hist: dict[str, int] = {}
    unsafe = 0
    scanned = 0
    by_id = {n.id: n for n in cluster.health.nodes}  # the live cluster map (membership)
    loss = {z: {"redundant": 0, "no_margin": 0, "unreadable": 0}
            for z in sorted({n.zone for n in cluster.health.nodes})}
    items = await cluster.meta.range(*space(STRIPE), limit=SCAN_LIMIT + 1)
    for item in items[:SCAN_LIMIT]:
        if unpack(item.value).get("state") not in KEPT_STATES:
            continue
        man = await load_manifest(cluster.meta, stripe_of(item.key))
        if man is None or isinstance(man, str) or not man.part.size:
            continue
        scanned += 1
        part = man.part
        good = [n for n in part.nodes if n and n in by_id and cluster.health.is_usable(n)]
        hist[str(len(good))] = hist.get(str(len(good)), 0) + 1
        for z, row in loss.items():
            left = sum(1 for n in good if by_id[n].zone != z)
            row["unreadable" if left < part.k else "no_margin" if left == part.k
                else "redundant"] += 1
        zones: dict[str, int] = {}
        for n in (x for x in part.nodes if x and x in by_id):
            zones[by_id[n].zone] = zones.get(by_id[n].zone, 0) + 1
        if any(c > part.m for c in zones.values()) or \
                len({x for x in part.nodes if x}) != len([x for x in part.nodes if x]):
            unsafe += 1
    return {"by_healthy_shards": dict(sorted(hist.items(), key=lambda kv: -int(kv[0]))),
            "scanned": scanned, "truncated": len(items) > SCAN_LIMIT, "zone_unsafe": unsafe,
            "zone_loss": loss}


async def collect_status(cluster: Cluster) -> dict[str, Any]:
    """The whole status document (JSON-ready)."""
    cfg = cluster.cfg
    nodes = []
    zones: dict[str, dict[str, Any]] = {}
    members = {m.spec.id: m.state for m in await load_members(cluster.meta, cfg)}
    rebalance = await read_rebalance_stats(cluster.meta)
    for n in cluster.health.nodes:
        s = cluster.health.states[n.id]
        nodes.append({"id": n.id, "zone": n.zone, "address": n.address, "role": n.role,
                      "membership": members.get(n.id, "active"),
                      "drain": (rebalance.get("draining") or {}).get(n.id),
                      "state": s.state, "since": time.time() - s.for_s(),  # wall clock
                      "used_bytes": s.used_bytes, "disk_bytes": s.disk_bytes,
                      "free_bytes": s.free_bytes, "shards": s.shards,
                      "last_error": s.last_error if s.state != UP else "",
                      "reason": node_reason(n.id, s.last_error) if s.state != UP else ""})
        z = zones.setdefault(n.zone, {"zone": n.zone, "nodes": 0, "up": 0, "used_bytes": 0,
                                      "disk_bytes": 0, "free_bytes": 0, "shards": 0})
        z["nodes"] += 1
        z["up"] += s.state == UP
        z["used_bytes"] += s.used_bytes
        z["disk_bytes"] += s.disk_bytes
        z["free_bytes"] += s.free_bytes
        z["shards"] += s.shards

    async def scrub(n: Any) -> tuple[str, dict[str, Any]]:
        if not cluster.health.is_usable(n.id):
            return n.id, {}
        try:
            return n.id, await asyncio.wait_for(cluster.nodes.scrub_status(n), 3.0)
        except (StorageError, TimeoutError):
            return n.id, {}

    scrubs = dict(await asyncio.gather(*(scrub(n) for n in cluster.health.nodes)))
    for row in nodes:
        sc = scrubs.get(row["id"]) or {}
        row["scrub"] = sc
    repair_backlog, r_more, refused = await _repair_queue(cluster)
    gc_backlog, g_more = await _count(cluster, *space(GC))
    stripes = await _stripe_health(cluster)
    repair = await read_stats(cluster.meta)
    settings = cfg.repair
    prof = cfg.profile()
    per_node = max((s.used_bytes for s in cluster.health.states.values()), default=0)
    rate = settings.rate_bytes_s or 64 * 2**20
    mttr_h = max(1.0, (settings.down_grace_s + per_node / rate) / 3600)
    est = estimate(DurabilityInputs(k=prof.k, m=prof.m, zones=len(cfg.zones),
                                    nodes=len(cluster.health.nodes), mttr_hours=round(mttr_h, 2),
                                    stripes=max(1, stripes["scanned"])))
    meta = metadata_estimate(cfg.metadata_backend, len(cfg.etcd_endpoints)
                             if cfg.metadata_backend == "etcd" else 1)
    durability = est.to_dict()
    obj = combined_loss(est.cluster_loss_per_year, meta.loss_per_year)
    durability.update({"metadata": meta.to_dict(), "object_loss_per_year": obj,
                       "object_nines": round(-math.log10(obj), 1) if obj > 0 else 99.0,
                       "inline_max_bytes": cfg.inline_max_bytes})
    return {
        "time": time.time(),
        "profile": {"name": prof.name, "k": prof.k, "m": prof.m},
        "zones": list(zones.values()),
        "nodes": nodes,
        "stripes": stripes,
        "repair": {"backlog": repair_backlog, "backlog_truncated": r_more, **repair,
                   "refused_stripes": refused},
        "gc": {"backlog": gc_backlog, "backlog_truncated": g_more},
        "rebalance": rebalance,
        "scrub": {
            "nodes_reporting": sum(1 for s in scrubs.values() if s),
            "passes_min": min((int(s.get("passes", 0)) for s in scrubs.values() if s),
                              default=0),
            "shards_verified": sum(int(s.get("shards_verified", 0)) for s in scrubs.values()),
            "corrupt_found": sum(int(s.get("corrupt_found", 0)) for s in scrubs.values()),
        },
        "integrity": await read_integrity(cluster.meta),
        "durability": durability,
        "archive": await class_figures(cluster.meta, SCAN_LIMIT),
        "workers": await _worker_leases(cluster),
        # etcd: the auth stamp watch of the gateway worker that answered (None on SQLite)
        "auth_stamp": (cluster.meta.auth_stamp_state()
                       if hasattr(cluster.meta, "auth_stamp_state") else None),
    }


async def _worker_leases(cluster: Cluster) -> list[dict[str, Any]]:
    """Which gateway runs which background worker (its lease `(L, worker)`)."""
    from storage.leases import Leases

    return [{"worker": x.name, "holder": x.holder, "token": x.token}
            for x in await Leases(cluster.meta).list()]


def fully_redundant(doc: dict[str, Any], since: float) -> bool:
    """True when the status shows every stripe at k+m healthy shards, zone-safe, no backlog,
    confirmed by a whole repair sweep pass that started after `since` (epoch seconds)."""
    width = str(doc["profile"]["k"] + doc["profile"]["m"])
    st, r = doc["stripes"], doc["repair"]
    last = r.get("last_pass_health") or {}
    return (r["backlog"] == 0 and st["zone_unsafe"] == 0
            and set(st["by_healthy_shards"]) <= {width}
            and float(r.get("last_sweep_start", 0)) > since and set(last) <= {width})
