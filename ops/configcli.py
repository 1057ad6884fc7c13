"""`tessera config get|set|unset`: the settings a running cluster changes without a restart.

    tessera config get                              every runtime setting, in force and configured
    tessera config set lifecycle.day_seconds 2      override it cluster-wide (all gateways)
    tessera config unset lifecycle.day_seconds      back to tessera.toml's value
    tessera config set repair.busy_lag_ms 50        repair may press harder while clients are
                                                    active (0 = fixed busy rate)

Over the admin API (`gateway/admin/settings.py`), with the credentials of tessera.env.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from ops.admincli import CliError, admin_request, config_option, use_config

# a user shortening days to try the archive tier expects restores to speed up too
RESTORE_NOTE = ("note: restores (RestoreObject tiers) keep [archive] day_seconds, set at first "
                "start (`tessera up --day-seconds N`); to change it, stop the cluster and edit "
                "[archive] day_seconds in tessera.toml")


def _show(r: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(r, indent=2))
        return
    for name, s in sorted(r["settings"].items()):
        source = "override" if s["override"] is not None else "tessera.toml"
        print(f"{name} = {s['value']:g}  ({source}; configured {s['configured']:g})")


def _config(a: argparse.Namespace) -> int:
    try:
        use_config(a.config)
        if a.action == "get":
            r = admin_request("GET", "/config")
        else:
            path = "/config/" + urllib.parse.quote(a.name, safe="")
            if a.action == "set":
                try:
                    value = float(a.value)
                except ValueError:
                    raise CliError(f"{a.value!r} is not a number") from None
                r = admin_request("PUT", path, {"value": value})
            else:
                r = admin_request("DELETE", path)
    except CliError as exc:
        print(f"tessera config {a.action}: {exc}", file=sys.stderr)
        return 1
    _show(r, a.json)
    if a.action == "set" and a.name == "lifecycle.day_seconds" and not a.json:
        print(RESTORE_NOTE)
    return 0


def add_config_parser(sub: Any) -> None:
    js = argparse.ArgumentParser(add_help=False, parents=[config_option()])
    js.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("config", help="settings a running cluster changes without a restart")
    cs = p.add_subparsers(dest="action", required=True)
    cs.add_parser("get", help="show the runtime settings", parents=[js])
    s = cs.add_parser("set", help="override a setting cluster-wide", parents=[js])
    s.add_argument("name", help="lifecycle.day_seconds, repair.busy_lag_ms or "
                   "rebalance.busy_lag_ms")
    s.add_argument("value")
    u = cs.add_parser("unset", help="drop an override (back to tessera.toml)", parents=[js])
    u.add_argument("name")
    p.set_defaults(func=_config)
