"""`python -m gateway --config FILE`: run one gateway process (S3 + admin listeners)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from gateway import logs
from gateway.balance import WorkerRole, shared_sockets, spawn_workers, split_hostport
from storage.config import Config, load_config
from storage.errors import ConfigError, StorageFull
from storage.filemodes import restrict_umask, secure_tree
from storage.malloc import GATEWAY_ARENAS, GATEWAY_TRIM_BYTES, tune_malloc
from storage.parentdeath import die_with_parent
from storage.sharedmap import NoSpaceForMap


def _worker_argv(argv: list[str] | None, a: argparse.Namespace, role: WorkerRole,
                 i: int) -> list[str]:
    """Worker i's command line: this one's, plus its place. Workers append to the same
    log file (O_APPEND: whole lines; each rotates it at the size limit, so lines of one
    period may land in the next backup, none is lost)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return [sys.executable, "-m", "gateway", *args, "--workers", str(role.count),
            "--worker-index", str(i), "--worker-dir", str(role.rundir),
            "--worker-parent", str(os.getpid()), "--listen-fd", ",".join(map(str, role.listen_fds))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tessera gateway",
                                description="Run one gateway: the S3 API and the admin API.")
    p.add_argument("--config", type=Path, required=True, help="cluster TOML file")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="least severe level logged (default INFO)")
    p.add_argument("--log-file", type=Path, help="write logs (and stderr) to this file, "
                   "rotated by size ($TESSERA_LOG_MAX_BYTES, $TESSERA_LOG_BACKUPS)")
    p.add_argument("--listen", help="S3 HOST:PORT, overriding [gateway] listen (several "
                   "gateways from one config)")
    p.add_argument("--admin-listen", help="admin HOST:PORT, overriding [gateway] admin_listen")
    p.add_argument("--workers", type=int, default=None,
                   help="gateway processes serving S3 on one shared socket, taking turns; "
                   "the first also runs the admin API and background workers (default: "
                   "[gateway] workers, 0 = one per core)")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by worker 0
    p.add_argument("--worker-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--worker-parent", type=int, help=argparse.SUPPRESS)
    p.add_argument("--listen-fd", type=_fds, default=(),
                   help=argparse.SUPPRESS)  # worker 0's S3 sockets
    a = p.parse_args(argv)
    if a.workers is not None and a.workers < 1:
        p.error("--workers must be at least 1")
    if a.worker_index is not None:
        die_with_parent(signal.SIGTERM, a.worker_parent)  # worker 0 is the parent
    restrict_umask()  # the metadata database, keys and the audit log are owner-only
    # megabyte buffers reuse heap pages instead of faulting in fresh ones, in one arena
    tune_malloc(trim_bytes=GATEWAY_TRIM_BYTES, arenas=GATEWAY_ARENAS)
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
    if a.workers is None:
        a.workers = cfg.gateway.workers or os.cpu_count() or 1
    try:  # shards below a shared data dir are tightened by their nodes, as they count them
        secure_tree(cfg.data_dir, list((cfg.data_dir / "nodes").glob("*/shards")))
        if a.worker_index is not None:
            from gateway.app import serve
            role = WorkerRole(a.worker_index, a.workers, a.worker_dir, a.listen_fd)
            asyncio.run(serve(cfg, role=role))
        elif a.workers > 1:
            with tempfile.TemporaryDirectory(prefix="gateway-",
                                             dir=_run_parent(cfg.data_dir)) as rundir:
                # one listening socket per address, every worker takes turns; their
                # descriptors are the S3 site's from here on (closed by it at shutdown)
                fds = tuple(sock.detach() for sock in _s3_sockets(cfg))
                role = WorkerRole(0, a.workers, Path(rundir), fds)
                asyncio.run(_serve_first(cfg, role, lambda i: _worker_argv(argv, a, role, i)))
        else:
            from gateway.app import serve
            asyncio.run(serve(cfg))
    except NoSpaceForMap as exc:  # before OSError: the address is not the problem
        if a.worker_index is not None:
            return 1  # a worker: worker 0 maps the same run directory's files and says it once
        print(f"tessera gateway: cannot start: {exc.strerror}", file=sys.stderr)
        return 1
    except StorageFull as exc:  # SQLite cannot open the metadata on its full disk
        if a.worker_index is not None:
            return 1  # a worker: worker 0 opens the same file and says it once
        print(f"tessera gateway: cannot start: {exc}, then start again", file=sys.stderr)
        return 1
    except OSError as exc:
        if a.worker_dir is not None and not a.worker_dir.exists():
            return 1  # worker 0 stopped and removed our run directory: it says why
        print(f"tessera gateway: cannot start on S3 {cfg.gateway.listen}, admin "
              f"{cfg.gateway.admin_listen}: {exc}; is another gateway running? (--listen, "
              "--admin-listen)", file=sys.stderr)
        return 1
    return 0


async def _serve_first(cfg: Config, role: WorkerRole, argv: Callable[[int], list[str]]) -> None:
    """Worker 0 of several: start the other workers, then import the gateway (`gateway.app`,
    most of a start's CPU) while they import theirs, and serve."""
    children = await spawn_workers(role, argv)
    from gateway.app import serve
    await serve(cfg, role=role, children=children)


def _s3_sockets(cfg: Config) -> list[socket.socket]:
    """The S3 sockets worker 0 binds (listening once a worker is ready) and every worker
    inherits."""
    host, port = split_hostport(cfg.gateway.listen)
    return shared_sockets(host, port)


def _fds(text: str) -> tuple[int, ...]:
    return tuple(int(fd) for fd in text.split(",") if fd)


def _run_parent(data_dir: Path) -> Path | None:
    """Where the workers' private directory goes: `<data>/run`, so everything a cluster holds
    lives under its data directory; the system temp directory only when that path is too long
    for the workers' Unix sockets (108 bytes on Linux)."""
    run = data_dir / "run"
    if len(str(run.resolve())) > 80:
        return None
    run.mkdir(mode=0o700, exist_ok=True)
    return run


if __name__ == "__main__":
    sys.exit(main())
