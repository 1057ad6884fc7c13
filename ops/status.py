"""`tessera status`: the cluster's durability picture (GET /admin/v1/status) as tables or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# -- the CLI ------------------------------------------------------------------------------------

def human_size(n: float) -> str:
    """Bytes as B/KiB/MiB/GiB/TiB for the operator tables."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _why_not_up(nodes: list[dict[str, Any]]) -> list[str]:
    """One line per node that is not up, with the last error its health probe got (a node
    whose process runs but whose clock is off showed only "down" in the table)."""
    from storage.node_reason import node_reason

    return [f"  {n['id']} {n['state']}: {node_reason(n['id'], n['last_error'])}"
            for n in nodes if n.get("state") != "up" and n.get("last_error")]


def _on_disk(row: dict[str, Any]) -> str:
    """What a node's (a zone's) shards take on disk: more than "used" (live shards) while
    packs hold deleted records compaction has not reclaimed yet (a gateway before this
    field: "used")."""
    return human_size(row.get("disk_bytes", row["used_bytes"]))


def render(doc: dict[str, Any]) -> str:
    """The human-readable report of a status document."""
    from ops.admincli import table

    p = doc["profile"]
    out = [f"profile {p['name']}: k={p['k']} m={p['m']}", "", "ZONES"]
    out.append(table([{**z, "used": human_size(z["used_bytes"]), "free": human_size(z["free_bytes"]),
                       "disk": _on_disk(z), "up": f"{z['up']}/{z['nodes']}"} for z in doc["zones"]],
                     [("zone", "zone"), ("up", "nodes up"), ("shards", "shards"),
                      ("used", "used"), ("disk", "on disk"), ("free", "free")]))
    out += ["", "NODES"]
    rows = []
    for n in doc["nodes"]:
        sc = n.get("scrub") or {}
        prog = "-"
        if sc:
            total = max(1, int(sc.get("shards_total_at_start", 0)))
            pct = min(100, 100 * int(sc.get("shards_this_pass", 0)) // total)
            prog = f"pass {sc.get('passes', 0)} +{pct}%" if sc.get("enabled") else "off"
        rows.append({**n, "used": human_size(n["used_bytes"]), "disk": _on_disk(n), "scrub": prog,
                     "corrupt": sc.get("corrupt_found", "-")})
    out.append(table(rows, [("id", "node"), ("zone", "zone"), ("address", "address"),
                            ("membership", "membership"),
                            ("state", "state"), ("shards", "shards"), ("used", "used"),
                            ("disk", "on disk"),
                            ("scrub", "scrub"), ("corrupt", "corrupt found")]))
    out += _why_not_up(doc["nodes"])
    st = doc["stripes"]
    out += ["", f"STRIPES (scan of {st['scanned']}{'+' if st['truncated'] else ''} by node "
            f"state; zone-unsafe: {st['zone_unsafe']})"]
    width = p["k"] + p["m"]
    out.append(table([{"healthy": f"{h}/{width}", "stripes": c}
                      for h, c in st["by_healthy_shards"].items()],
                     [("healthy", "healthy shards"), ("stripes", "stripes")]))
    if st.get("zone_loss"):
        out += ["", "IF A ZONE WERE LOST NOW (same scan, today's node health)",
                table([{"zone": z, **row} for z, row in st["zone_loss"].items()],
                      [("zone", "zone lost"), ("redundant", "still redundant"),
                       ("no_margin", "readable, no margin"), ("unreadable", "unreadable")])]
    r = doc["repair"]
    last = r.get("last_pass_health") or {}
    out += ["", "REPAIR",
            f"  backlog (R/):      {r['backlog']}{'+' if r['backlog_truncated'] else ''}",
            f"  rebuilt:           {r.get('shards_rebuilt', 0)} shards in "
            f"{r.get('stripes_repaired', 0)} stripes ({human_size(r.get('bytes_rebuilt', 0))})",
            f"  unrepairable now:  {r.get('unrepairable', 0)}",
            f"  sources disagreed: {r.get('sources_disagree', 0)} (a lying source stopped a "
            "rebuild; with a spare shard to compare, the deep scrub's check names it and "
            "the stripe is rebuilt next)",
            f"  rebuilds refused:  {r.get('rebuilds_refused', 0)} (of those: the k remaining "
            "shards do not authenticate; a liar among them cannot be named until another "
            "shard returns. Bring a down node back (its stripes are retried at once); "
            "retries back off per stripe to 1 h; NODES above shows which are down)",
            *_refused_stripes(r.get("refused_stripes") or []),
            f"  orphans deleted:   {r.get('orphans_deleted', 0)}",
            pacing_line(r.get("pacing"), " (safe stripes; stripes at risk: idle rate)"),
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
    out += _render_auth_stamp(doc.get("auth_stamp"))
    if doc.get("workers"):
        out += ["", "WORKERS (lease holders)",
                table(doc["workers"], [("worker", "worker"), ("holder", "gateway"),
                                       ("token", "fencing token")])]
    return "\n".join(out)


def _refused_stripes(alarms: list[dict[str, Any]]) -> list[str]:
    """One line per stripe whose rebuild keeps being refused (an alarm, not a count)."""
    return [f"  ALARM stripe {a['stripe']}: rebuild refused {a['refused']} times in a row "
            f"({a['error']}); with every node up: several lying shards or a wrong key "
            "identity, see the gateway log" for a in alarms]


def pacing_line(p: dict[str, Any] | None, note: str = "") -> str:
    """How fast safe work may go now: the idle rate, or while clients are active the
    adaptive rate (its floor, the event loop's lag against its bound)."""
    p = p or {}
    if not p:
        return "  pacing:            -"
    idle = human_size(p.get("rate_idle", 0)) + "/s" if p.get("rate_idle") else "unlimited"
    busy = human_size(p.get("busy_rate_now", 0)) + "/s"
    if p.get("adaptive"):
        busy += (f" adaptive (floor {human_size(p.get('busy_rate_floor', 0))}/s, loop lag "
                 f"{p.get('loop_lag_ms', 0)} ms, bound {p.get('lag_bound_ms', 0)} ms)")
    now = "clients active" if p.get("clients_busy") else "clients idle"
    return f"  pacing:            {now}; idle {idle}, busy {busy}{note}"


def _render_rebalance(rb: dict[str, Any] | None, nodes: list[dict[str, Any]]) -> list[str]:
    """The REBALANCE section: state, shards moved, and drain progress per draining node."""
    rb = rb or {}
    out = ["", "REBALANCE",
           f"  state:             {rb.get('state', 'idle')}",
           f"  moved:             {rb.get('shards_moved', 0)} shards "
           f"({human_size(rb.get('bytes_moved', 0))}; {rb.get('copied', 0)} copied, "
           f"{rb.get('rebuilt', 0)} rebuilt, {rb.get('balance_moves', 0)} for balance, "
           f"{rb.get('failed', 0)} failed)", pacing_line(rb.get("pacing"))]
    for n in nodes:
        if n.get("membership") != "draining":
            continue
        d = n.get("drain") or {}
        left = "drained" if n["id"] in (rb.get("drained") or []) else (
            "counting" if d.get("left") is None else f"{d['left']} shards left")
        out.append(f"  draining {n['id']}: {left}, {d.get('moved', 0)} moved, "
                   f"{n.get('shards', 0)} shards on the node")
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


def _render_auth_stamp(a: dict[str, Any] | None) -> list[str]:
    """The AUTH STAMP line (etcd only): whether the watch answers requests, or requests read
    the stamp from etcd (a watch that never confirms: slower, not wrong; "NOT confirmed"
    once they have for WARN_AFTER_S, as the log's one warning), or the worker is idle."""
    if not a:
        return []
    since = a.get("reading_for_s")
    for_s = f" (for {since:.0f} s)" if since is not None else ""
    if a["state"] == "confirmed":
        state = "watch confirmed (requests answered from memory)"
    elif a["state"] == "idle":
        state = ("idle: no request reads the stamp now (the next one reads it once and "
                 "resumes the watch's checks)")
    elif a.get("warned"):
        state = "watch NOT confirmed: every request reads the stamp from etcd" + for_s
    else:
        state = "confirming the watch: requests read the stamp from etcd meanwhile" + for_s
    return ["", "AUTH STAMP (etcd, the gateway worker that answered)",
            f"  {state}; {a['reads']} requests read it so far"]


def _render_archive(a: dict[str, Any] | None) -> list[str]:
    """The ARCHIVE section: bytes per storage class, restores pending, restored copies."""
    from ops.admincli import table

    if not a:
        return []
    rows = [{"class": c, "objects": r["objects"], "bytes": human_size(r["bytes"]),
             "stored": human_size(r["stored_bytes"])} for c, r in a["classes"].items()]
    return ["", f"ARCHIVE (restores pending {a['restores_pending']}, restored copies "
            f"{a['restored_copies']}{'; scan truncated' if a['scanned_truncated'] else ''})",
            table(rows, [("class", "storage class"), ("objects", "objects"),
                         ("bytes", "bytes"), ("stored", "stored (compressed)")])]


def status_command(a: argparse.Namespace) -> int:
    from ops.admincli import CliError, admin_request, use_config

    try:
        use_config(a.config)
        doc = admin_request("GET", "/status")
    except CliError as exc:
        print(f"tessera status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2, sort_keys=True) if a.json else render(doc))
    return 0


def add_status_command(sub: Any) -> None:
    from ops.admincli import config_option

    p = sub.add_parser("status", help="cluster health, redundancy, backlogs and durability",
                       parents=[config_option()])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=status_command)


