"""`tessera fsck`: check a cluster's metadata and shards for consistency (read only).

    tessera fsck [--config tessera.toml] [--json]

Every record against the others, and every node's shard listing against the records
(`storage/fsck.py` says what is checked and how a finding racing a write is re-checked).
Prints a table of the findings (or JSON), a progress count on a terminal's stderr. Exit
status: 0 clean (warnings at most: what the background workers are still settling), 1 errors
found, 2 the check is incomplete (a node did not list its shards: its copies are unchecked)
or could not start (a missing or wrong config, metadata database or cluster secret: one line
naming it). Creates no database, counter or secret file: the SQLite database is opened read
only (SQLite itself may add its -wal/-shm sidecars), the secret only read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops.admincli import table
from ops.progress import Progress
from storage.config_env import config_path
from storage.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from storage.fsck import FsckReport

SHOWN = 20  # findings listed per kind in the table view (--json has up to storage.fsck.KEEP)


def read_secret(path: Path) -> bytes:
    """The cluster secret, read only (never created): a ConfigError naming the path if it
    is missing, unreadable or not the hex a node reads."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cluster secret {path}: {why}") from None


async def run_fsck(config: str | None, progress: Any = None) -> FsckReport:
    """The report of `storage.fsck.fsck` over the cluster `config` describes."""
    import aiohttp

    from storage.config import load_config
    from storage.fsck import fsck
    from storage.membership import REMOVED, load_members
    from storage.metadata import open_store
    from storage.metadata.sqlite import SqliteStore
    from storage.shards.client import NodeClient

    cfg = load_config(config_path(config))
    secret = read_secret(cfg.secret_path)
    if cfg.metadata_backend == "sqlite":
        meta: Any = await SqliteStore.open_readonly(cfg.data_dir / cfg.metadata_path)
    else:
        meta = await open_store(cfg.metadata_backend, "", cfg.etcd_endpoints, cfg.etcd_tls)
    try:
        specs = [m.spec for m in await load_members(meta, cfg) if m.state != REMOVED]
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            return await fsck(meta, NodeClient(session, secret), specs, progress)
    finally:
        await meta.close()


def render(report: FsckReport) -> str:
    """The report as text: what was checked, a table of finding kinds, the first findings of
    each kind, and the verdict with what to do next."""
    from storage.fsck import ERRORS

    out = ["checked: " + ", ".join(f"{k} {v}" for k, v in report.counts.items())]
    rows = [{"level": "ERROR" if k in ERRORS else "warning", "check": k, "count": n}
            for k, n in sorted(report.totals.items(), key=lambda kv: (kv[0] not in ERRORS,
                                                                       kv[0]))]
    if rows:
        out += ["", table(rows, [("level", "level"), ("check", "check"), ("count", "count")]),
                ""]
    for row in rows:
        items = report.findings.get(row["check"], [])
        out.append(f"{row['check']}:")
        out += [f"  {x}" for x in items[:SHOWN]]
        if row["count"] > SHOWN:
            out.append(f"  ... and {row['count'] - SHOWN} more (--json lists up to "
                       f"{len(items)})")
    if report.changed:
        out.append(f"{report.changed} finding(s) dropped: a fresh read showed a concurrent "
                   "change")
    for node, why in sorted(report.unreachable.items()):
        out.append(f"INCOMPLETE node {node} did not list its shards: {why}")
    if report.incomplete:
        out.append(f"INCOMPLETE {report.unchecked_copies} copies unchecked, "
                   f"{report.unchecked_stripes} stripe(s) readable only if they are there: "
                   "bring the node(s) back (`tessera node list`, `tessera status`) and run "
                   "fsck again")
    out.append(f"{report.errors} error(s)" if report.errors else
               "no errors found, check incomplete" if report.incomplete else "no errors")
    return "\n".join(out)


def _command(a: argparse.Namespace) -> int:
    bar = Progress("fsck")
    try:
        report = asyncio.run(run_fsck(a.config, bar.count))
    except (ConfigError, StorageError) as exc:
        bar.end()
        print(f"tessera fsck: {exc}", file=sys.stderr)
        return 2
    bar.end()
    if a.json:
        print(json.dumps(report.as_json(), indent=1))
    else:
        print(render(report))
    return report.status()


def add_fsck_parser(sub: Any) -> None:
    p = sub.add_parser("fsck", help="check metadata and shards for consistency (read only; "
                       "exit 1 errors found, 2 incomplete)", description=(
                           "Check every metadata record against the others and every node's "
                           "shards against the records; changes nothing. Exit 0 clean "
                           "(warnings at most), 1 errors found, 2 incomplete (a node did not "
                           "answer: its copies unchecked) or could not start (no or wrong "
                           "config, database or secret). A progress count shows on a "
                           "terminal's stderr."))
    p.add_argument("--config", help="tessera.toml (default: $TESSERA_CONFIG)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=_command)
