"""`tessera node list|add|drain|activate|remove|lost-packs`: cluster membership over the
admin API (and a node's lost packs: `lost-packs ID [--ack [PACKS]] [--json]`).

(`tessera node --config FILE --id ID` without one of these actions still runs a node.)
Credentials come from the environment as for `tessera tenant` (see ops/admincli.py), or
from `--config FILE`.

`tessera node drain ID --wait [--timeout S]` shows the drain's progress on stderr until the
node holds nothing (it can then be removed). Exit status: 0 the node holds no shard; 1 an
error (the admin API refused, or stayed unreachable for `OUTAGE_S` (60 s) of retries, or
the drain was cancelled); 3 `--timeout` passed first (the drain goes on); 130 interrupted
(the drain goes on in the background).

`tessera node remove ID --force` removes a drained node that still holds shards no stripe
needs (orphans of unfinished writes, which wait `[repair] orphan_grace_s` (a day) for the
collector; stale copies of moved shards). It says first how many it abandons and asks on a
terminal (`--yes` for scripts); it refuses while any shard on the node is still named by a
stripe or cannot be vouched for, until a rebalancer pass found the node drained and every
gateway has re-read the cluster map since the drain began, and while a shard no stripe
names yet is younger than `[repair] orphan_grace_s` (a write that may still commit), so no
acknowledged byte is dropped; the removal applies only if the node is still draining.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from typing import Any

from ops.status import human_size

ACTIONS = ("list", "add", "drain", "activate", "remove", "lost-packs")
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
    add.add_argument("--id", required=True, help="the node's id, as it was started "
                     "(`tessera node --id ID`); a removed node's id is never reused")
    add.add_argument("--zone", required=True, help="its availability zone (e.g. az2)")
    add.add_argument("--address", required=True, help="HOST:PORT the node listens on")
    add.add_argument("--role", default="standard", help="standard (default) or archive")
    add.add_argument("--weight", type=float, default=1.0,
                     help="its share of new shards relative to other nodes (default 1.0)")
    lost = sub.add_parser("lost-packs", help="packs a node found lost at its start (their "
                          "shards were missing there; repair rebuilds them and then clears "
                          "the report)")
    lost.add_argument("id")
    lost.add_argument("--ack", nargs="?", const="", default=None, metavar="PACKS",
                      help="stop reporting them: every one, or PACKS (e.g. 3,4)")
    for name, text in (("drain", "move every shard off a node (in the background)"),
                       ("activate", "cancel a drain"),
                       ("remove", "remove a drained, empty node from the cluster map")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("id")
    sub.choices["drain"].add_argument(
        "--wait", action="store_true", help="show progress until the node holds nothing "
        "(exit 0; 3 when --timeout passes first; 130 on Ctrl-C: the drain goes on)")
    sub.choices["drain"].add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                                      help="with --wait: give up waiting after this long")
    sub.choices["remove"].add_argument(
        "--force", action="store_true", help="remove a drained node that still holds shards "
        "no stripe needs (orphans awaiting [repair] orphan_grace_s); says what it abandons "
        "first and refuses if any shard is still needed")
    sub.choices["remove"].add_argument("--yes", action="store_true",
                                       help="with --force: do not ask")
    from ops.admincli import CONFIG_HELP

    for sp in sub.choices.values():
        sp.add_argument("--json", action="store_true", help="print JSON")
        sp.add_argument("--config", help=CONFIG_HELP)
    return p


WAIT_POLL_S = 1.0  # how often `drain --wait` reads the node's progress
OUTAGE_S = 60.0  # how long `drain --wait` rides out an unreachable admin API (a restart)
BACKOFF_MAX_S = 8.0  # its longest pause between two tries
TIMED_OUT = 3


def _row(nid: str) -> dict[str, Any]:
    from ops.admincli import CliError, admin_request

    for r in admin_request("GET", "/nodes")["nodes"]:
        if r["id"] == nid:
            return r
    raise CliError(f"node {nid} left the cluster map while draining")


def _row_riding_out(nid: str) -> dict[str, Any]:
    """`_row`, tried again with backoff (1 s doubling to `BACKOFF_MAX_S`) for up to
    `OUTAGE_S` while the admin API is unavailable (review19c L7: a gateway restart ended
    the wait with exit 1 while the drain went on); said on stderr; then the error."""
    from ops.admincli import Unavailable

    start = time.monotonic()
    pause = 1.0
    while True:
        try:
            return _row(nid)
        except Unavailable as exc:
            waited = time.monotonic() - start
            if waited + pause > OUTAGE_S:
                raise Unavailable(f"{exc}; gave up after {waited:.0f} s of retries (the drain "
                                  "goes on: `tessera node list`)") from None
            print(f"tessera node drain: {exc}; trying again in {pause:g} s (for up to "
                  f"{OUTAGE_S:g} s)", file=sys.stderr)
            time.sleep(pause)
            pause = min(pause * 2, BACKOFF_MAX_S)


def wait_drained(nid: str, timeout: float | None) -> int:
    """Poll node `nid` until it is drained and holds no shard: a progress line on stderr
    each time it changes (one rewritten line on a terminal). The exit status."""
    from ops.admincli import CliError

    start = time.monotonic()
    last = ""
    tty = sys.stderr.isatty()
    while True:
        r = _row_riding_out(nid)
        if r.get("membership") != "draining":
            raise CliError(f"node {nid} is {r.get('membership')} now: the drain was cancelled")
        d = r.get("drain") or {}
        shards = int(r.get("shards") or 0)
        # a count the gateway has from the node's last answer: none from a node not up
        empty = shards == 0 and r.get("state") == "up"
        if d.get("drained") and empty:
            line = f"node {nid}: drained, holds no shard ({d.get('moved', 0)} moved); remove " \
                   f"it with `tessera node remove {nid}`"
        elif d.get("drained"):
            line = (f"node {nid}: drained ({d.get('moved', 0)} moved); {shards} shard(s) no "
                    "stripe uses await collection ([workers] gc_grace_s; orphans of unfinished "
                    f"writes [repair] orphan_grace_s: `tessera node remove {nid} --force` "
                    "removes it now)")
        else:
            line = f"node {nid}: draining, {progress(r)}, {shards} shard(s) on the node"
        if line != last:
            sys.stderr.write(f"\r{line}\x1b[K" if tty else line + "\n")
            sys.stderr.flush()
            last = line
        if d.get("drained") and empty:
            if tty:
                sys.stderr.write("\n")
            return 0
        if timeout is not None and time.monotonic() - start >= timeout:
            if tty:
                sys.stderr.write("\n")
            print(f"tessera node drain: {nid} still holds {shards} shard(s) after "
                  f"{timeout:g} s; the drain goes on (`tessera node list`)", file=sys.stderr)
            return TIMED_OUT
        time.sleep(WAIT_POLL_S)


def _confirm_force(a: argparse.Namespace, plan: dict[str, Any]) -> None:
    """Say what `remove --force` abandons; ask on a terminal unless --yes."""
    from ops.admincli import CliError
    from ops.confirm import ask

    what = (f"removing node {a.id} abandons {plan['abandoned']} shard file(s) on it that no "
            f"stripe needs ({plan['orphans']} orphans of unfinished writes or deletes, "
            f"{plan['stale']} stale copies of moved shards); nothing acknowledged is on it")
    if a.yes:
        print(what, file=sys.stderr)
        return
    if not sys.stdin.isatty():
        raise CliError(f"{what}; repeat with --yes to remove it")
    print(what, file=sys.stderr)
    if not ask(f"remove node {a.id}?"):
        raise CliError("not removed")


def run(a: argparse.Namespace) -> int:
    from ops.admincli import admin_request, use_config

    use_config(a.config)
    q = urllib.parse.quote
    if a.action == "list":
        r = admin_request("GET", "/nodes", query={"all": "1"} if a.all else None)
        print(json.dumps(r, indent=2, sort_keys=True) if a.json else render(r["nodes"]))
        return 0
    if a.action == "add":
        r = admin_request("POST", "/nodes", {"id": a.id, "zone": a.zone, "address": a.address,
                                             "role": a.role, "weight": a.weight})
        text = f"node {a.id} added in zone {a.zone} at {a.address}; it takes new shards now"
    elif a.action == "remove":
        path = f"/nodes/{q(a.id, safe='')}"
        r = admin_request("DELETE", path, query={"force": "1", "dry_run": "1"} if a.force
                          else None)
        # a gateway from before `already_removed` answers a removed node without a plan
        already = bool(r.get("already_removed")) or (a.force and "force" not in r)
        if a.force and not already:
            _confirm_force(a, r["force"])
            r = admin_request("DELETE", path, query={"force": "1"})
            already = bool(r.get("already_removed"))
        if already:
            text = f"node {a.id} was already removed from the cluster map; nothing changed"
        elif a.force:
            text = f"node {a.id} removed from the cluster map ({r['force']['abandoned']} " \
                   "unneeded shard file(s) left on its disk)"
        else:
            text = f"node {a.id} removed from the cluster map"
    elif a.action == "lost-packs":
        path = f"/nodes/{q(a.id, safe='')}/lost-packs"
        if a.ack is None:
            r = admin_request("GET", path)
        else:
            r = admin_request("POST", path + "/ack", query={"packs": a.ack} if a.ack else None)
        text = lost_packs_text(a.id, r)
    else:
        r = admin_request("POST", f"/nodes/{q(a.id, safe='')}/{a.action}")
        text = render([r])
    print(json.dumps(r, indent=2, sort_keys=True) if a.json else text)
    if a.action == "drain" and a.wait:
        sys.stdout.flush()
        return wait_drained(a.id, a.timeout)
    return 0


def main(argv: list[str]) -> int:
    from ops.admincli import CliError

    a = build_parser().parse_args(argv)
    try:
        return run(a)
    except CliError as exc:
        print(f"tessera node {a.action}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if a.action == "drain":
            print(f"\ntessera node drain: stopped waiting; the drain of {a.id} goes on "
                  "(`tessera node list`)", file=sys.stderr)
        return 130


def no_action(stream: Any = None) -> int:
    """`tessera node` alone printed the node server's usage and "the following arguments are
    required: --id" (newuser20), though an operator typing it wants the membership actions:
    print their help, which to add, and how a node is run instead; exit 2 (a usage error)."""
    out = stream or sys.stderr
    build_parser().print_help(out)
    print(f"\ntessera node: no action given: add one of {', '.join(ACTIONS)} (e.g. "
          "`tessera node list --help`), or run a node: tessera node --config FILE --id ID",
          file=out)
    return 2


def is_membership_command(argv: list[str]) -> bool:
    """True when `tessera node ARGV` names a membership action (else it runs a node)."""
    return bool(argv) and argv[0] in ACTIONS


def lost_packs_text(nid: str, r: dict[str, Any]) -> str:
    """`lost-packs` for a person: what an ack took (when one was made), then what the node
    still reports, saying when its list (at most 1000) is short of the count."""
    lost = r.get("packs_lost") or []
    head = "" if "acknowledged" not in r else (
        f"node {nid}: lost packs acknowledged: "
        f"{', '.join(map(str, r.get('acknowledged') or [])) or 'none'}\n")
    if not lost:
        return head + f"node {nid}: no lost pack reported"
    total = int(r.get("packs_missing", len(lost)) or len(lost))
    more = f" (the first {len(lost)} of {total})" if total > len(lost) else ""
    return head + (f"node {nid}: lost packs {', '.join(map(str, lost))}{more} (their shards "
                   "were missing there; the repair sweep rebuilds them and then clears this; "
                   f"`tessera node lost-packs {nid} --ack` clears it now)")
