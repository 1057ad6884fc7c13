"""`python -m nodes.forker --config C --log-dir L ID...`: many nodes of one config, one import.

`tessera up` starts nine to fifteen nodes at once, and a `python -m nodes` spends most of its
start importing aiohttp and the storage modules (~0.45 of ~0.6 CPU-s). The forker imports them
once and forks one child per node id before any thread or event loop exists; each child then
runs `nodes.__main__.main` as `python -m nodes --config C --id ID --log-file L/ID.log` would,
in its own session, stderr appended to its log. Lines on stdout (shared with the nodes' own
`node ID ready on URL` lines; each is one write, shorter than PIPE_BUF, so none interleave):

    forked ID PID       a child was started
    exited ID STATUS    a child ended (STATUS as subprocess's returncode: -N for signal N)

The forker ignores SIGTERM and SIGINT: whoever started it stops the nodes by pid, and the
forker exits once its last child has ended.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from nodes.__main__ import main as node_main


def _child(config: str, node_id: str, log_dir: Path) -> NoReturn:
    """The forked node: own session, default signals, stderr to its log, then the node."""
    code = 1
    try:
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        log = log_dir / f"{node_id}.log"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        os.dup2(fd, 2)
        os.close(fd)
        # Buffered whatever PYTHONUNBUFFERED says: the ready line goes out in one write, not
        # interleaved with a sibling's on the shared pipe.
        sys.stdout = open(1, "w", buffering=1 << 16, closefd=False)  # noqa: SIM115
        code = node_main(["--config", config, "--id", node_id, "--log-file", str(log)])
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _say(line: str) -> None:
    """One line on stdout in one write (children share the pipe)."""
    os.write(1, f"{line}\n".encode())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nodes.forker",
                                description="Start storage nodes of one config by forking.")
    p.add_argument("--config", required=True, help="cluster TOML file")
    p.add_argument("--log-dir", required=True, type=Path, help="where ID.log files go")
    p.add_argument("ids", nargs="+", help="node ids (in the config's [[nodes]])")
    a = p.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    sys.stdout.flush()
    gc.freeze()  # the imported modules stay shared pages in every child
    children: dict[int, str] = {}
    for node_id in a.ids:
        pid = os.fork()
        if pid == 0:
            _child(a.config, node_id, a.log_dir)
        children[pid] = node_id
        _say(f"forked {node_id} {pid}")
    while children:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        node_id = children.pop(pid, "")
        if node_id:
            _say(f"exited {node_id} {os.waitstatus_to_exitcode(status)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
