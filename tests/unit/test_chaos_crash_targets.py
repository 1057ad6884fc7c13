"""The crash_cluster fault kills -9 only processes it can attribute to the cluster it
started (its own children, the pids the directory's run/*.pid files name, their
descendants), never a process that merely names the data directory on its command line:
`sudo tessera chaos --data DIR` (root is needed for the partition and fill_disk faults),
or a `timeout`/`nohup` wrapper, would otherwise be killed with it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.chaos_cluster import ChaosCluster

WAIT = "import sys; print('ready', flush=True); sys.stdin.read()"  # until stdin closes
# One more of these as a child (it shares our stdin, so it ends with us), then its pid.
PARENT = ("import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', "
          f"{WAIT!r}], stdout=subprocess.PIPE, text=True); c.stdout.readline(); "
          "print(c.pid, flush=True); sys.stdin.read()")


@pytest.fixture
def spawn() -> Iterator:
    procs: list[subprocess.Popen] = []

    def start(code: str, *args: str) -> tuple[subprocess.Popen, str]:
        p = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout is not None
        return p, p.stdout.readline().strip()  # exec'd: its command line is in /proc

    yield start
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(30)


def test_crash_spares_a_wrapper_naming_the_directory(tmp_path: Path, spawn) -> None:
    wrapper, _ = spawn(WAIT, "chaos", "--data", str(tmp_path), "--config",
                       str(tmp_path / "tessera.toml"))
    assert wrapper.pid not in ChaosCluster(tmp_path, {}).processes()


def test_crash_takes_the_pid_files_processes_and_their_children(tmp_path: Path,
                                                               spawn) -> None:
    node, child = spawn(PARENT, "--config", str(tmp_path / "tessera.toml"), "--id", "n1")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "n1.pid").write_text(f"{node.pid}\n")
    (tmp_path / "run" / "n2.pid").write_text(f"{os.getpid()}\n")  # stale: a reused pid
    assert ChaosCluster(tmp_path, {}).processes() == sorted([node.pid, int(child)])
