"""Run one storage node.

    python -m nodes --config CLUSTER.toml --id n1
    python -m nodes --id n1 --listen HOST:PORT --zone az1 --data DIR --secret-file FILE

With --config, the node's address and zone come from its [[nodes]] entry, its data directory is
`<data_dir>/nodes/<id>` and the cluster secret is `<data_dir>/secrets/cluster.key` (created on
first start). Explicit flags override the config. Prints `node <id> ready on http://HOST:PORT`
once listening (port 0 picks a free port and prints it); SIGTERM or SIGINT stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import uvloop
from aiohttp import web

from nodes.app import create_app
from nodes.handlers import DEFAULT_MAX_SHARD_BYTES, NODE
from nodes.leanput import LeanListener
from nodes.logs import JsonLog, log_to_stderr
from storage.config import PackSettings, ScrubSettings, env_settings, load_config
from storage.errors import ConfigError
from storage.filemodes import restrict_umask
from storage.malloc import tune_malloc
from storage.shards.auth import load_or_create_secret

SHUTDOWN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class NodeSettings:
    node_id: str
    zone: str
    host: str
    port: int
    data_dir: Path
    secret: bytes
    window_s: int
    max_shard_bytes: int
    scrub: ScrubSettings = ScrubSettings()
    packs: PackSettings = PackSettings()


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"listen address {listen!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _read_secret(path: Path) -> bytes:
    if not path.is_file():
        raise ConfigError(f"secret file {path} not found")
    try:
        return load_or_create_secret(path)
    except ValueError:
        raise ConfigError(f"secret file {path} does not hold a hex secret") from None


def settings_from_args(argv: list[str] | None = None) -> NodeSettings:
    p = argparse.ArgumentParser(
        prog="tessera node", description="Run a Tessera storage node.",
        epilog="Cluster membership (admin API): tessera node list|add|drain|activate|remove|"
               "lost-packs "
               "(each with --help).")
    p.add_argument("--config", type=Path, help="cluster TOML file")
    p.add_argument("--id", required=True, help="node id (in the config's [[nodes]])")
    p.add_argument("--listen", help="HOST:PORT to listen on")
    p.add_argument("--zone", help="availability zone")
    p.add_argument("--data", type=Path, help="the node's data directory")
    p.add_argument("--secret-file", type=Path, help="cluster secret (hex) file")
    p.add_argument("--window", type=int, help="request signature window in seconds")
    p.add_argument("--shard-size-limit", type=int, default=DEFAULT_MAX_SHARD_BYTES,
                   metavar="BYTES", help="largest shard this node accepts, in bytes (default "
                   f"{DEFAULT_MAX_SHARD_BYTES}); not [packs] max_shard_bytes, the size up to "
                   "which shards are packed")
    p.add_argument("--log-file", type=Path, help="write logs (and stderr) to this file, rotated "
                   "by size ($TESSERA_LOG_MAX_BYTES, $TESSERA_LOG_BACKUPS)")
    p.add_argument("--scrub-rate", type=float, default=None, metavar="MBPS",
                   help="scrub rate in MB/s, 0 = off (default: the config's [scrub])")
    a = p.parse_args(argv)
    listen, zone, data, secret, window = a.listen, a.zone, a.data, None, a.window
    scrub: ScrubSettings = env_settings("scrub")  # without --config: defaults + environment
    packs: PackSettings = env_settings("packs")
    if a.config is not None:
        cfg = load_config(a.config)
        scrub, packs = cfg.scrub, cfg.packs
        try:
            spec = cfg.node(a.id)
        except KeyError:
            raise ConfigError(f"node {a.id!r} is not in {a.config}") from None
        listen = listen or spec.address
        zone = zone or spec.zone
        data = data or cfg.data_dir / "nodes" / a.id
        window = window or cfg.node_request_window_s
        if a.secret_file is None:
            secret = load_or_create_secret(cfg.secret_path)
    missing = [f"--{n}" for n, v in (("listen", listen), ("zone", zone), ("data", data))
               if not v]
    if a.secret_file is None and secret is None:
        missing.append("--secret-file")
    if missing:
        raise ConfigError(f"without --config, give {' '.join(missing)}")
    if secret is None:
        secret = _read_secret(a.secret_file)
    host, port = parse_listen(listen)
    if a.scrub_rate is not None:
        scrub = replace(scrub, rate_bytes_s=a.scrub_rate * 2**20)
    return NodeSettings(node_id=a.id, zone=zone, host=host, port=port, data_dir=Path(data),
                        secret=secret, window_s=window or 300,
                        max_shard_bytes=a.shard_size_limit, scrub=scrub, packs=packs)


async def serve(s: NodeSettings) -> None:
    app = create_app(s.node_id, s.zone, s.data_dir, s.secret, s.window_s,
                     max_shard_bytes=s.max_shard_bytes, scrub=s.scrub, packs=s.packs)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    listener = LeanListener(app[NODE], runner)  # whole-shard PUTs lean, the rest aiohttp
    try:
        host, port = await listener.start(s.host, s.port)
        shown = f"[{host}]" if ":" in host else host
        print(f"node {s.node_id} ready on http://{shown}:{port}", flush=True)
        JsonLog(s.node_id).info("listening", zone=s.zone, address=f"{shown}:{port}",
                                data_dir=str(s.data_dir))
        await stop.wait()
        JsonLog(s.node_id).info("stopping")
    finally:
        await listener.stop(SHUTDOWN_TIMEOUT_S)
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    restrict_umask()  # shards, temp files and keys this node makes are owner-only
    tune_malloc()  # received megabytes reuse heap pages instead of faulting in fresh ones
    argv = list(sys.argv[1:] if argv is None else argv)
    log_file = None
    if "--log-file" in argv:  # logging is set up before the rest is parsed
        i = argv.index("--log-file")
        log_file = Path(argv[i + 1]) if i + 1 < len(argv) else None
        del argv[i:i + 2]
    log_to_stderr(log_file=log_file)
    try:
        settings = settings_from_args(argv)
    except ConfigError as exc:
        print(f"tessera node: {exc}", file=sys.stderr)
        return 2
    try:  # on uvloop: the loop's own share of each request (reads, hand-offs, timers) in C,
        # ~10% of the nodes' user CPU under 1 MiB PUTs (session 15's pairs)
        uvloop.run(serve(settings))
    except OSError as exc:
        print(f"tessera node: cannot serve on {settings.host}:{settings.port}: {exc.strerror}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
