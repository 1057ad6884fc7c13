"""review20e: every Unix socket a gateway puts in its workers' run directory binds, at the
longest run directory `_run_parent` allows (a longer one moves to the system temp dir)."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from gateway.__main__ import _run_parent
from gateway.balance import WorkerRole
from storage.metadata.etcd_share import SOCKET_NAME


def test_run_dir_sockets_bind_at_the_longest_run_dir_allowed() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as base:
        data = Path(base) / ("d" * (80 - len(base) - len("//run")))
        data.mkdir()
        run = _run_parent(data)
        assert run is not None and len(str(run)) == 80  # the longest kept under data
        rundir = Path(tempfile.mkdtemp(prefix="gateway-", dir=run))  # as gateway.__main__
        role = WorkerRole(0, 99, rundir)
        for path in (role.socket(98), rundir / SOCKET_NAME):
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(str(path))  # OSError "AF_UNIX path too long" if not
