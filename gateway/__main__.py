"""`python -m gateway --config FILE`: run one gateway process (S3 + admin listeners)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace
from pathlib import Path

from gateway import logs
from gateway.app import serve
from storage.config import load_config
from storage.errors import ConfigError
from storage.filemodes import restrict_umask, secure_tree


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tessera gateway", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="cluster TOML file")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--log-file", type=Path, help="write logs (and stderr) to this file, "
                   "rotated by size ($TESSERA_LOG_MAX_BYTES, $TESSERA_LOG_BACKUPS)")
    p.add_argument("--listen", help="S3 HOST:PORT, overriding [gateway] listen (several "
                   "gateways from one config)")
    p.add_argument("--admin-listen", help="admin HOST:PORT, overriding [gateway] admin_listen")
    a = p.parse_args(argv)
    restrict_umask()  # the metadata database, keys and the audit log are owner-only
    logs.setup(a.log_level, a.log_file)
    try:
        cfg = load_config(a.config)
    except ConfigError as exc:
        print(f"tessera gateway: {exc}", file=sys.stderr)
        return 2
    if a.listen or a.admin_listen:
        gw = replace(cfg.gateway, listen=a.listen or cfg.gateway.listen,
                     admin_listen=a.admin_listen or cfg.gateway.admin_listen)
        cfg = replace(cfg, gateway=gw)
    try:  # shards below a shared data dir are tightened by their nodes, as they count them
        secure_tree(cfg.data_dir, list((cfg.data_dir / "nodes").glob("*/shards")))
        asyncio.run(serve(cfg))
    except OSError as exc:
        print(f"tessera gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
