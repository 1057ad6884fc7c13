"""`tessera up` refuses a data directory that processes of an earlier `tessera up` still
serve: its flock dies with a `tessera up` killed by -9, while the gateway and nodes it
started keep running (review13c), and a second cluster there would be a second writer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops import localcluster
from ops.localcluster import left_running, lock_data_dir


def _server(data: Path, name: str) -> subprocess.Popen[bytes]:
    """A process whose command line names the directory's config, as a node's does."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()",
                             "--config", str(data / "tessera.toml")], stdin=subprocess.PIPE)
    config = str(data / "tessera.toml").encode()
    for _ in range(10_000):  # until it has exec'd (bounded): its command line is a node's
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            if config in f.read().split(b"\0"):
                break
        time.sleep(0.001)
    (data / "run").mkdir(parents=True, exist_ok=True)
    (data / "run" / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc


def test_a_left_running_server_is_named_and_refused(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localcluster, "LEFT_EXIT_S", 0.2)
    proc = _server(tmp_path, "n1")
    try:
        with pytest.raises(RuntimeError, match=rf"left running \(pids {proc.pid}\).*kill"):
            lock_data_dir(tmp_path)
    finally:
        proc.communicate(b"")
    os.close(lock_data_dir(tmp_path))  # once it has exited, the directory is free again


def test_a_reused_or_stale_pid_is_not_a_server(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "gateway.pid").write_text(f"{os.getpid()}\n")  # another program
    (tmp_path / "run" / "n1.pid").write_text("999999999\n")  # gone
    (tmp_path / "run" / "n2.pid").write_text("")  # never written whole
    assert left_running(tmp_path, wait_s=0) == []


def test_a_server_still_exiting_is_waited_for(tmp_path: Path) -> None:
    proc = _server(tmp_path, "n1")
    assert left_running(tmp_path, wait_s=0) == [proc.pid]
    proc.stdin.close()  # it exits now; the bounded wait sees it go
    try:
        assert left_running(tmp_path, wait_s=30) == []
    finally:
        proc.wait()
