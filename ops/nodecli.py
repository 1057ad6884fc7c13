"""`tessera node list|add|drain|activate|remove`: cluster membership over the admin API.

(`tessera node --config FILE --id ID` without one of these actions still runs a node.)
Credentials come from the environment as for `tessera tenant` (see ops/admincli.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from ops.status import human_size

ACTIONS = ("list", "add", "drain", "activate", "remove")
COLS = [("id", "node"), ("zone", "zone"), ("address", "address"), ("role", "role"),
        ("membership", "membership"), ("state", "health"), ("shards", "shards"),
        ("used", "used"), ("progress", "drain progress")]


def progress(row: dict[str, Any]) -> str:
    """Drain progress of one node row: shards left to move, or '-'."""
    d = row.get("drain")
    if not d:
        return "-"
    if d.get("drained"):
        return f"drained ({d.get('moved', 0)} moved)"
    left = d.get("left")
    left_s = "counting" if left is None else f"{left} left"
    return f"{left_s}, {d.get('moved', 0)} moved"


def render(rows: list[dict[str, Any]]) -> str:
    from ops.admincli import table

    return table([{**r, "used": human_size(r.get("used_bytes", 0)), "progress": progress(r)}
                  for r in rows], COLS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tessera node", description="Cluster membership.")
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="nodes, their state, shards and drain progress")
    ls.add_argument("--all", action="store_true", help="include removed nodes")
    add = sub.add_parser("add", help="add a running node to the cluster map")
    add.add_argument("--id", required=True)
    add.add_argument("--zone", required=True)
    add.add_argument("--address", required=True, help="HOST:PORT the node listens on")
    add.add_argument("--role", default="standard", help="standard (default) or archive")
    add.add_argument("--weight", type=float, default=1.0)
    for name, text in (("drain", "move every shard off a node (in the background)"),
                       ("activate", "cancel a drain"),
                       ("remove", "remove a drained, empty node from the cluster map")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("id")
    for sp in sub.choices.values():
        sp.add_argument("--json", action="store_true", help="print JSON")
    return p


def run(a: argparse.Namespace) -> None:
    from ops.admincli import admin_request

    q = urllib.parse.quote
    if a.action == "list":
        r = admin_request("GET", "/nodes", query={"all": "1"} if a.all else None)
        print(json.dumps(r, indent=2, sort_keys=True) if a.json else render(r["nodes"]))
        return
    if a.action == "add":
        r = admin_request("POST", "/nodes", {"id": a.id, "zone": a.zone, "address": a.address,
                                             "role": a.role, "weight": a.weight})
        text = f"node {a.id} added in zone {a.zone} at {a.address}; it takes new shards now"
    elif a.action == "remove":
        r = admin_request("DELETE", f"/nodes/{q(a.id, safe='')}")
        text = f"node {a.id} removed from the cluster map"
    else:
        r = admin_request("POST", f"/nodes/{q(a.id, safe='')}/{a.action}")
        text = render([r])
    print(json.dumps(r, indent=2, sort_keys=True) if a.json else text)


def main(argv: list[str]) -> int:
    from ops.admincli import CliError

    a = build_parser().parse_args(argv)
    try:
        run(a)
    except CliError as exc:
        print(f"tessera node {a.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def is_membership_command(argv: list[str]) -> bool:
    """True when `tessera node ARGV` names a membership action (else it runs a node)."""
    return bool(argv) and argv[0] in ACTIONS
