"""The `tessera` command: run processes of the cluster and operate it."""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import signal
import sys
from pathlib import Path
from typing import Any

from storage.config import DEFAULT_INLINE_MAX_BYTES
from storage.errors import StorageError
from storage.filemodes import restrict_umask


def _up(a: argparse.Namespace) -> int:
    from ops.localcluster import run

    if a.workers is not None:  # every gateway started reads it (`tessera gateway --workers`)
        if a.workers < 1:
            print("tessera up: --workers must be at least 1", file=sys.stderr)
            return 2
        os.environ["TESSERA_GATEWAY_WORKERS"] = str(a.workers)
    return asyncio.run(run(Path(a.data), a.port, a.node_port, a.admin_port, a.metadata,
                           a.etcd_port, a.etcd_peer_port, a.day_seconds, a.gateways,
                           a.inline_max_bytes))


def port_number(text: str) -> int:
    """An argparse type: a TCP port 1-65535 (a bad one is a usage error, not a traceback)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 1-65535")
    return port


def _exec_module(module: str, argv: list[str]) -> int:
    os.execv(sys.executable, [sys.executable, "-m", module, *argv])
    return 0


def version() -> str:
    """The installed package's version (the source tree's when run uninstalled)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("tessera")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless it is unset or the text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (action.default in (None, False, argparse.SUPPRESS) or "default" in text
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Every (sub)command parser shows defaults (add_subparsers reuses the parser class); a
    command given without its action (`tessera config`) prints its help and what to do
    next, exit 2 (argparse's "the following arguments are required" said neither)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
        self._actions_of: argparse._SubParsersAction | None = None  # type: ignore[type-arg]

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs["required"] = False  # a missing action is answered in parse_known_args
        self._actions_of = super().add_subparsers(**kwargs)
        return self._actions_of

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        ns, rest = super().parse_known_args(args, namespace)
        sp = self._actions_of
        if sp is not None and getattr(ns, sp.dest, None) is None:
            names = list(sp.choices)
            self.print_help(sys.stderr)
            self.exit(2, f"\n{self.prog}: no {'command' if self.prog == 'tessera' else 'action'}"
                         f" given: add one of {', '.join(names)} (e.g. `{self.prog} "
                         f"{names[0]} --help`)\n")
        return ns, rest


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tessera", description="Tessera distributed storage.")
    p.add_argument("--version", action="version", version=f"tessera {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    up_help = ("start a whole local cluster on this machine: 15 nodes (9 standard + 6 "
               "archive) in 3 zones, and a gateway")
    up = sub.add_parser("up", help=up_help, description=up_help[0].upper() + up_help[1:] + ".")
    up.add_argument("--data", default="./tessera-data", help="data directory")
    up.add_argument("--port", type=port_number, default=None,
                    help="S3 port on 127.0.0.1 (default 9000 at first start, then the port in "
                         "DATA/tessera.toml; giving it again moves the gateway there)")
    up.add_argument("--admin-port", type=port_number, default=None,
                    help="admin port on 127.0.0.1 (default 9001 at first start, then the "
                         "config's; giving it again moves it)")
    up.add_argument("--node-port", type=port_number, default=None,
                    help="port of every node (default 9100 at first start, then the config's; "
                         "giving it again moves every node of the config there)")
    up.add_argument("--metadata", choices=("sqlite", "etcd"), default="sqlite",
                    help="metadata backend at first start: embedded SQLite, or a local "
                         "3-member etcd cluster on 127.0.{1,2,3}.10")
    up.add_argument("--etcd-port", type=port_number, default=2379,
                    help="etcd client port (--metadata etcd, first start only)")
    up.add_argument("--etcd-peer-port", type=port_number, default=2380,
                    help="etcd peer port (--metadata etcd, first start only)")
    up.add_argument("--day-seconds", type=float, default=None,
                    help="length of a lifecycle/restore 'day' in seconds, written to the "
                         "[archive] section at first start (default 86400; tests use ~10)")
    up.add_argument("--inline-max-bytes", type=int, default=None,
                    help="at first start: keep objects up to this size sealed in their "
                         "metadata record instead of erasure-coded shards (0 = off, max "
                         f"65536; default {DEFAULT_INLINE_MAX_BYTES})")
    up.add_argument("--gateways", type=int, default=1,
                    help="gateways to start, on consecutive S3 and admin ports from --port "
                         "and --admin-port, sharing the metadata (needs --metadata etcd)")
    up.add_argument("--workers", type=int, default=None,
                    help="processes per gateway serving S3 on one address (default: one "
                         "per core)")
    up.set_defaults(func=_up)
    sub.add_parser("gateway", help="run one gateway process (--config FILE)", add_help=False)
    sub.add_parser("node", help="run one storage node (--config FILE --id ID), or manage "
                   "membership: node list|add|drain|activate|remove|lost-packs", add_help=False)
    from ops.volumecli import add_parser as add_volume_parser

    add_volume_parser(sub)
    from ops.admincli import add_admin_commands

    add_admin_commands(sub)
    from ops.kmscli import add_kms_parser

    add_kms_parser(sub)
    from ops.status import add_status_command

    add_status_command(sub)
    from ops.chaos_run import add_chaos_command

    add_chaos_command(sub)
    from ops.lifecyclecli import add_lifecycle_parser

    add_lifecycle_parser(sub)
    from ops.configcli import add_config_parser

    add_config_parser(sub)
    from ops.metadatacli import add_metadata_parser

    add_metadata_parser(sub)
    from ops.fsckcli import add_fsck_parser

    add_fsck_parser(sub)
    return p


def _stdout_closed() -> bool:
    """Whether stdout's reader has gone (`tessera status | head` after head exits)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError):  # stdout closed or not a real file descriptor
        return False


def _quiet_after_closed_stdout() -> int:
    """Exit as a SIGPIPE'd tool does (141, nothing on stderr) once the reader of stdout left.

    stdout is pointed at /dev/null so the interpreter's final flush does not raise again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    """Run one `tessera` command; a reader of stdout that left early (`| head`) ends it quietly."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rc = _main(argv)
        sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe is a warning
        return rc
    except BrokenPipeError as exc:
        if _stdout_closed():
            return _quiet_after_closed_stdout()
        print(f"tessera {argv[0] if argv else ''}: {exc}", file=sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    """Dispatch `argv` to its command; errors a user can act on are one line (exit 1)."""
    restrict_umask()  # data dirs, logs and keys made by any command are owner-only
    if argv and argv[0] == "gateway":
        return _exec_module("gateway", argv[1:])
    if argv and argv[0] == "node":
        from ops import nodecli

        if len(argv) == 1:
            return nodecli.no_action()
        if nodecli.is_membership_command(argv[1:]):  # tessera node list|add|drain|remove
            return nodecli.main(argv[1:])
        return _exec_module("nodes", argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise  # main() tells a closed stdout from a peer that hung up
    except OSError as exc:  # a path the operator gave, said with what to do
        from ops.pathcheck import explain

        print(f"tessera {args.command}: {explain(exc)}", file=sys.stderr)
        return 1
    except (StorageError, RuntimeError) as exc:
        print(f"tessera {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
