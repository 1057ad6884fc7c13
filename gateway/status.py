"""`tessera status` and the admin route behind it: the durability picture of the cluster.

`GET /admin/v1/status` (also `/status`; admin SigV4 like every admin route) answers zones,
nodes with their state and capacity, stripes by number of healthy shards (a bounded scan of
the stripe index judged by node state, plus the repair sweep's last full pass, which stats
every shard), repair and GC backlogs, scrub progress per node and an annual durability
estimate (see storage/durability.py for the model and its assumptions).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from typing import Any

from aiohttp import web

from storage.archive import class_figures
from storage.cluster import Cluster
from storage.durability import DurabilityInputs, combined_loss, estimate, metadata_estimate
from storage.errors import StorageError
from storage.health import UP
from storage.keyspace import GC, REPAIR, STRIPE, space, stripe_of
from storage.lying import read_integrity
from storage.membership import load_members
from storage.records import unpack
from storage.workers.rebalance import read_stats as read_rebalance_stats
from storage.workers.repair import load_manifest, read_stats

SCAN_LIMIT = 5000
COUNT_LIMIT = 100_000


async def _count(cluster: Cluster, start: bytes, end: bytes) -> tuple[int, bool]:
    items = await cluster.meta.range(start, end, limit=COUNT_LIMIT + 1)
    return min(len(items), COUNT_LIMIT), len(items) > COUNT_LIMIT


async def _stripe_health(cluster: Cluster) -> dict[str, Any]:
    """Stripes by healthy shards (shards on usable nodes), from a bounded X/ scan."""
    hist: dict[str, int] = {}
    unsafe = 0
    scanned = 0
    by_id = {n.id: n for n in cluster.health.nodes}  # the live cluster map (membership)
    items = await cluster.meta.range(*space(STRIPE), limit=SCAN_LIMIT + 1)
    for item in items[:SCAN_LIMIT]:
        if unpack(item.value).get("state") != "live":
            continue
        man = await load_manifest(cluster.meta, stripe_of(item.key))
        if man is None or isinstance(man, str) or not man.part.size:
            continue
        scanned += 1
        part = man.part
        good = [n for n in part.nodes if n and n in by_id and cluster.health.is_usable(n)]
        hist[str(len(good))] = hist.get(str(len(good)), 0) + 1
        zones: dict[str, int] = {}
        for n in (x for x in part.nodes if x and x in by_id):
            zones[by_id[n].zone] = zones.get(by_id[n].zone, 0) + 1
        if any(c > part.m for c in zones.values()) or \
                len({x for x in part.nodes if x}) != len([x for x in part.nodes if x]):
            unsafe += 1
    return {"by_healthy_shards": dict(sorted(hist.items(), key=lambda kv: -int(kv[0]))),
            "scanned": scanned, "truncated": len(items) > SCAN_LIMIT, "zone_unsafe": unsafe}


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
                      "state": s.state, "since": s.since, "used_bytes": s.used_bytes,
                      "free_bytes": s.free_bytes, "shards": s.shards,
                      "last_error": s.last_error if s.state != UP else ""})
        z = zones.setdefault(n.zone, {"zone": n.zone, "nodes": 0, "up": 0, "used_bytes": 0,
                                      "free_bytes": 0, "shards": 0})
        z["nodes"] += 1
        z["up"] += s.state == UP
        z["used_bytes"] += s.used_bytes
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
    repair_backlog, r_more = await _count(cluster, *space(REPAIR))
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
        "repair": {"backlog": repair_backlog, "backlog_truncated": r_more, **repair},
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
    }


async def _worker_leases(cluster: Cluster) -> list[dict[str, Any]]:
    """Which gateway runs which background worker (its lease `(L, worker)`)."""
    from storage.leases import Leases

    return [{"worker": x.name, "holder": x.holder, "token": x.token}
            for x in await Leases(cluster.meta).list()]


def register_status(app: web.Application, cluster: Cluster) -> None:
    """Add `GET /admin/v1/status` and `GET /status` (admin-authenticated) to the admin app."""
    from gateway.admin.auth import AdminError, authenticate_admin

    async def handle(request: web.Request) -> web.Response:
        try:
            await authenticate_admin(request, cluster.tenants, cluster.cfg.gateway.max_skew_s)
        except AdminError as exc:
            return web.json_response({"error": {"code": exc.code, "message": exc.message}},
                                     status=exc.status)
        return web.json_response(await collect_status(cluster))

    app.router.add_get("/admin/v1/status", handle)
    app.router.add_get("/status", handle)


# -- the CLI ------------------------------------------------------------------------------------

def human_size(n: float) -> str:
    """Bytes as B/KiB/MiB/GiB/TiB for the operator tables."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def render(doc: dict[str, Any]) -> str:
    """The human-readable report of a status document."""
    from gateway.admincli import table

    p = doc["profile"]
    out = [f"profile {p['name']}: k={p['k']} m={p['m']}", "", "ZONES"]
    out.append(table([{**z, "used": human_size(z["used_bytes"]), "free": human_size(z["free_bytes"]),
                       "up": f"{z['up']}/{z['nodes']}"} for z in doc["zones"]],
                     [("zone", "zone"), ("up", "nodes up"), ("shards", "shards"),
                      ("used", "used"), ("free", "free")]))
    out += ["", "NODES"]
    rows = []
    for n in doc["nodes"]:
        sc = n.get("scrub") or {}
        prog = "-"
        if sc:
            total = max(1, int(sc.get("shards_total_at_start", 0)))
            pct = min(100, 100 * int(sc.get("shards_this_pass", 0)) // total)
            prog = f"pass {sc.get('passes', 0)} +{pct}%" if sc.get("enabled") else "off"
        rows.append({**n, "used": human_size(n["used_bytes"]), "scrub": prog,
                     "corrupt": sc.get("corrupt_found", "-")})
    out.append(table(rows, [("id", "node"), ("zone", "zone"), ("address", "address"),
                            ("membership", "membership"),
                            ("state", "state"), ("shards", "shards"), ("used", "used"),
                            ("scrub", "scrub"), ("corrupt", "corrupt found")]))
    st = doc["stripes"]
    out += ["", f"STRIPES (scan of {st['scanned']}{'+' if st['truncated'] else ''} by node "
            f"state; zone-unsafe: {st['zone_unsafe']})"]
    width = p["k"] + p["m"]
    out.append(table([{"healthy": f"{h}/{width}", "stripes": c}
                      for h, c in st["by_healthy_shards"].items()],
                     [("healthy", "healthy shards"), ("stripes", "stripes")]))
    r = doc["repair"]
    last = r.get("last_pass_health") or {}
    out += ["", "REPAIR",
            f"  backlog (R/):      {r['backlog']}{'+' if r['backlog_truncated'] else ''}",
            f"  rebuilt:           {r.get('shards_rebuilt', 0)} shards in "
            f"{r.get('stripes_repaired', 0)} stripes ({human_size(r.get('bytes_rebuilt', 0))})",
            f"  unrepairable now:  {r.get('unrepairable', 0)}",
            f"  sources disagreed: {r.get('sources_disagree', 0)} (a lying source stopped a "
            "rebuild; the deep scrub named it)",
            f"  orphans deleted:   {r.get('orphans_deleted', 0)}",
            f"  sweep passes:      {r.get('sweep_passes', 0)} (last full pass, shards "
            f"verified present: {', '.join(f'{k}/{width}: {v}' for k, v in sorted(last.items(), reverse=True)) or '-'})",
            f"  GC backlog (G/):   {doc['gc']['backlog']}{'+' if doc['gc']['backlog_truncated'] else ''}"]
    out += _render_rebalance(doc.get("rebalance"), doc["nodes"])
    sc = doc["scrub"]
    out += ["", "SCRUB",
            f"  nodes reporting {sc['nodes_reporting']}, full passes done (min) "
            f"{sc['passes_min']}, shards verified {sc['shards_verified']}, corrupt found "
            f"{sc['corrupt_found']}"]
    out += _render_integrity(doc.get("integrity") or {})
    d = doc["durability"]
    inp = d["inputs"]
    out += ["", "DURABILITY (estimate, per year)"]
    md = d.get("metadata")
    if md:
        copies = ("one file on one disk: back it up, or use etcd" if md["backend"] == "sqlite"
                  else f"{md['members']} members, lost with a majority")
        out += [f"  every object:            loss probability {d['object_loss_per_year']:.3g} "
                f"(~{d['object_nines']} nines): no object outlives its metadata record",
                f"  metadata store:          {md['loss_per_year']:.3g} (~{md['nines']} nines), "
                f"{md['backend']}, {copies}; "
                + (f"objects up to {d['inline_max_bytes']} bytes live in it"
                   if d["inline_max_bytes"] else "no object data inline")]
    out += [f"  erasure-coded shards:    {d['cluster_loss_per_year']:.3g} "
            f"(~{d['nines']} nines) for {inp['stripes']} stripes, "
            f"{inp['k']}+{inp['m']} over {inp['zones']} zones and {inp['nodes']} nodes",
            f"  inputs: node AFR {inp['node_afr']:.0%}, MTTR {inp['mttr_hours']} h, zone loss "
            f"{inp['zone_afr']}/yr, zone MTTR {inp['zone_mttr_hours']} h",
            "  assumptions: " + "; ".join(d["assumptions"])]
    out += _render_archive(doc.get("archive"))
    if doc.get("workers"):
        out += ["", "WORKERS (lease holders)",
                table(doc["workers"], [("worker", "worker"), ("holder", "gateway"),
                                       ("token", "fencing token")])]
    return "\n".join(out)


def _render_rebalance(rb: dict[str, Any] | None, nodes: list[dict[str, Any]]) -> list[str]:
    """The REBALANCE section: state, shards moved, and drain progress per draining node."""
    rb = rb or {}
    out = ["", "REBALANCE",
           f"  state:             {rb.get('state', 'idle')}",
           f"  moved:             {rb.get('shards_moved', 0)} shards "
           f"({human_size(rb.get('bytes_moved', 0))}; {rb.get('copied', 0)} copied, "
           f"{rb.get('rebuilt', 0)} rebuilt, {rb.get('balance_moves', 0)} for balance, "
           f"{rb.get('failed', 0)} failed)"]
    for n in nodes:
        if n.get("membership") != "draining":
            continue
        d = n.get("drain") or {}
        left = "drained" if n["id"] in (rb.get("drained") or []) else (
            "counting" if d.get("left") is None else f"{d['left']} shards left")
        out.append(f"  draining {n['id']}: {left}, {d.get('moved', 0)} moved, "
                   f"{n.get('shards', 0)} shard files on the node")
    return out


def _render_integrity(i: dict[str, Any]) -> list[str]:
    """The INTEGRITY section: lying shards found (by reads, by the deep scrub) and the deep
    scrub's progress."""
    found = i.get("lying_found") or {}
    ds = i.get("deep_scrub") or {}
    return ["", "INTEGRITY",
            f"  lying shards found: {sum(int(v) for v in found.values())} (reads "
            f"{found.get('read', 0)}, deep scrub {found.get('scrub', 0)}; quarantined and "
            "queued for repair)",
            f"  deep scrub:         {ds.get('passes', 0)} passes, {ds.get('stripes_checked', 0)} "
            f"stripes and {human_size(ds.get('bytes_checked', 0))} checked against their "
            f"plaintext, {ds.get('unverifiable', 0)} unverifiable"]


def _render_archive(a: dict[str, Any] | None) -> list[str]:
    """The ARCHIVE section: bytes per storage class, restores pending, restored copies."""
    from gateway.admincli import table

    if not a:
        return []
    rows = [{"class": c, "objects": r["objects"], "bytes": human_size(r["bytes"]),
             "stored": human_size(r["stored_bytes"])} for c, r in a["classes"].items()]
    return ["", f"ARCHIVE (restores pending {a['restores_pending']}, restored copies "
            f"{a['restored_copies']}{'; scan truncated' if a['scanned_truncated'] else ''})",
            table(rows, [("class", "storage class"), ("objects", "objects"),
                         ("bytes", "bytes"), ("stored", "stored (compressed)")])]


def status_command(a: argparse.Namespace) -> int:
    from gateway.admincli import CliError, admin_request

    try:
        doc = admin_request("GET", "/status")
    except CliError as exc:
        print(f"tessera status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2, sort_keys=True) if a.json else render(doc))
    return 0


def add_status_command(sub: Any) -> None:
    p = sub.add_parser("status", help="cluster health, redundancy, backlogs and durability")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=status_command)


def fully_redundant(doc: dict[str, Any], since: float) -> bool:
    """True when the status shows every stripe at k+m healthy shards, zone-safe, no backlog,
    confirmed by a whole repair sweep pass that started after `since` (epoch seconds)."""
    width = str(doc["profile"]["k"] + doc["profile"]["m"])
    st, r = doc["stripes"], doc["repair"]
    last = r.get("last_pass_health") or {}
    return (r["backlog"] == 0 and st["zone_unsafe"] == 0
            and set(st["by_healthy_shards"]) <= {width}
            and float(r.get("last_sweep_start", 0)) > since and set(last) <= {width})
