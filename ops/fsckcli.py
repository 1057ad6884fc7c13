"""`tessera fsck`: check a cluster's metadata and shards for consistency (read only).

    tessera fsck [--config tessera.toml] [--json]

Every record against the others, and every node's shard listing against the records
(`storage/fsck.py` says what is checked). Prints the findings; exit status 1 when any is an
error, 0 when only warnings (what the background workers are still settling) or nothing.
Run it on a cluster at rest for an exact answer: writes in flight show as warnings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from storage.config_env import config_path
from storage.errors import ConfigError, StorageError


async def run_fsck(config: str | None) -> Any:
    """The report of `storage.fsck.fsck` over the cluster `config` describes."""
    import aiohttp

    from storage.config import load_config
    from storage.fsck import fsck
    from storage.membership import REMOVED, load_members
    from storage.metadata import open_store
    from storage.shards.auth import load_or_create_secret
    from storage.shards.client import NodeClient

    cfg = load_config(config_path(config))
    meta = await open_store(cfg.metadata_backend, str(cfg.data_dir / cfg.metadata_path),
                            cfg.etcd_endpoints)
    try:
        specs = [m.spec for m in await load_members(meta, cfg) if m.state != REMOVED]
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            nodes = NodeClient(session, load_or_create_secret(cfg.secret_path))
            return await fsck(meta, nodes, specs)
    finally:
        await meta.close()


def _command(a: argparse.Namespace) -> int:
    try:
        report = asyncio.run(run_fsck(a.config))
    except (ConfigError, StorageError) as exc:
        print(f"tessera fsck: {exc}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(report.as_json(), indent=1))
    else:
        print("\n".join(report.lines()))
    return 1 if report.errors else 0


def add_fsck_parser(sub: Any) -> None:
    p = sub.add_parser("fsck", help="check metadata and shards for consistency (read only; "
                       "exit 1 when something is wrong)")
    p.add_argument("--config", help="tessera.toml (default: $TESSERA_CONFIG)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=_command)
