"""`python -m nodes.forker --config C --log-dir L ID...`: many nodes of one config, one import.

`tessera up` starts nine to fifteen nodes at once, and a `python -m nodes` spends most of its
start importing aiohttp and the storage modules (~0.45 of ~0.6 CPU-s). The forker imports them
once and forks one child per node id before any thread or event loop exists; each child then
runs `nodes.__main__.main` as `python -m nodes --config C --id ID --log-file L/ID.log` would,
in its own session, stderr appended to its log. Lines on stdout (shared with the nodes' own
`node ID ready on URL` lines unless `--node-stdout-fd` gives the nodes another; each is one
write, shorter than PIPE_BUF, so none interleave):

    forked ID PID       a child was started
    exited ID STATUS    a child ended (STATUS as subprocess's returncode: -N for signal N)

The forker blocks SIGTERM and SIGINT: whoever started it stops the nodes by pid, and the
forker exits once its last child has ended. Blocked, not ignored: a child inherits the mask
and unblocks once its handlers are the default, so a SIGTERM sent right after `forked` is
delivered then, not lost. With `--parent-pid` (what `tessera up` passes) the forker dies
with that parent (PR_SET_PDEATHSIG); the nodes, in their own sessions, outlive it as before.
A closed stdout (its reader gone) does not stop it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from nodes.__main__ import main as node_main
from storage.parentdeath import die_with_parent

HELD = frozenset({signal.SIGTERM, signal.SIGINT})  # blocked in the forker, unblocked in nodes


def _child(config: str, node_id: str, log_dir: Path, node_out: int | None = None) -> NoReturn:
    """The forked node: own session, default signals, stderr to its log (stdout to
    `node_out` if given), then the node."""
    code = 1
    try:
        os.setsid()
        if node_out is not None:  # off the forker's stdout: that one ends with the forker
            os.dup2(node_out, 1)
            os.close(node_out)
        with contextlib.suppress(OSError):  # `ps -o comm`/top tell the nodes apart (15 bytes)
            Path("/proc/self/comm").write_text(f"node-{node_id}"[:15])
        for sig in HELD:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)  # one sent since `forked` lands now
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
    """One line on stdout in one write (children share the pipe); none once the reader is
    gone (EPIPE): the children are still waited for."""
    with contextlib.suppress(BrokenPipeError):
        os.write(1, f"{line}\n".encode())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nodes.forker",
                                description="Start storage nodes of one config by forking.")
    p.add_argument("--config", required=True, help="cluster TOML file")
    p.add_argument("--log-dir", required=True, type=Path, help="where ID.log files go")
    p.add_argument("--node-stdout-fd", type=int, help="the nodes' stdout (default: this one)")
    p.add_argument("--parent-pid", type=int, help="die (SIGKILL) when this parent does")
    p.add_argument("ids", nargs="+", help="node ids (in the config's [[nodes]])")
    a = p.parse_args(argv)
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    if a.parent_pid is not None:
        die_with_parent(signal.SIGKILL, a.parent_pid)  # cleared in each forked child
    sys.stdout.flush()
    gc.freeze()  # the imported modules stay shared pages in every child
    children: dict[int, str] = {}
    for node_id in a.ids:
        pid = os.fork()
        if pid == 0:
            _child(a.config, node_id, a.log_dir, a.node_stdout_fd)
        children[pid] = node_id
        _say(f"forked {node_id} {pid}")
    if a.node_stdout_fd is not None:
        os.close(a.node_stdout_fd)  # the nodes' pipe ends with the last node
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
