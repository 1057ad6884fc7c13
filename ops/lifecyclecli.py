"""`tessera lifecycle run-once`: apply every bucket's lifecycle rules now.

It opens the cluster itself (from `--config` or $TESSERA_CONFIG, as `tessera volume` does)
and runs one pass of the lifecycle engine, then the restore worker's due work (restored
copies whose tier latency passed, expired copies to retire): the same steps the gateway's
workers run on their own schedule. "Now" is the real clock; a "day" is `[archive]
day_seconds` of the cluster's config.

Test hook: $TESSERA_TEST_LIFECYCLE_HOLD=PATH holds the pass after its first transition
(storage/testing/archive_holds.py), so a test can kill a pass that is provably mid-way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from storage.errors import ConfigError, StorageError
from storage.testing.archive_holds import install_from_env


async def run_once(config: Path) -> dict[str, Any]:
    from storage.cluster import Cluster
    from storage.config import load_config

    cluster = await Cluster.open(load_config(config))
    try:
        install_from_env(cluster.archive, gateway=False)
        rep = await cluster.lifecycle.run_once()
        arch = cluster.archive
        restored = await arch.complete_due_restores(limit=1000)
        expired = await arch.expire_restored(limit=1000)
        return {**asdict(rep), "restores_completed": restored,
                "restores_failed": arch.stats.restores_failed, "restored_copies_expired": expired}
    finally:
        await cluster.close()


def _command(a: argparse.Namespace) -> int:
    from ops.admincli import table
    from storage.config import config_path

    try:
        path = config_path(a.config)
    except ConfigError as exc:
        print(f"tessera lifecycle: {exc}", file=sys.stderr)
        return 1
    try:
        doc = asyncio.run(run_once(path))
    except (StorageError, OSError) as exc:
        print(f"tessera lifecycle: {exc}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(table([{"what": k.replace("_", " "), "count": v} for k, v in doc.items()],
                    [("what", "action"), ("count", "count")]))
    return 0


def add_lifecycle_parser(sub: Any) -> None:
    p = sub.add_parser("lifecycle", help="bucket lifecycle rules (archive tier)")
    lsub = p.add_subparsers(dest="lifecycle_command", required=True)
    r = lsub.add_parser("run-once", help="apply every bucket's lifecycle rules now")
    r.add_argument("--config", help="tessera.toml (default: $TESSERA_CONFIG)")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=_command)
