"""`tessera metadata recover-space`: etcd writable again after its NOSPACE alarm.

    tessera metadata recover-space [--config tessera.toml]

etcd past its quota refuses every write (S3 clients get 503) and stays so after objects are
deleted, until its history is compacted, every member defragmented and the alarm disarmed
(`storage/metadata/etcd_space.py`). This does the three, in etcd's order, and prints each
member's database size before and after. SQLite has no quota: free disk space instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from storage.config_env import config_path
from storage.errors import ConfigError, StorageError


async def _recover_space(config: str | None) -> list[str]:
    from storage.config import load_config
    from storage.metadata.etcd import EtcdStore
    from storage.metadata.etcd_space import recover_space

    cfg = load_config(config_path(config))
    if cfg.metadata_backend != "etcd":
        return ["the metadata is SQLite, which has no quota: free space on the file system "
                "of its database and writes resume (no restart needed)"]
    store = await EtcdStore.open(cfg.etcd_endpoints, cfg.etcd_tls)
    try:
        return (await recover_space(store)).lines()
    finally:
        await store.close()


def _command(a: argparse.Namespace) -> int:
    try:
        lines = asyncio.run(_recover_space(a.config))
    except (ConfigError, StorageError) as exc:
        print(f"tessera metadata recover-space: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def add_metadata_parser(sub: Any) -> None:
    p = sub.add_parser("metadata", help="metadata store maintenance")
    msub = p.add_subparsers(dest="metadata_command", required=True)
    r = msub.add_parser("recover-space", help="after etcd's NOSPACE alarm and freeing space "
                        "(deleting objects): compact, defragment every member, disarm")
    r.add_argument("--config", help="tessera.toml (default: $TESSERA_CONFIG)")
    r.set_defaults(func=_command)
