"""The cluster `tessera chaos` runs against, as processes: `tessera up` started in a
directory, its nodes killed, stopped, restarted, the whole cluster crashed (only processes
it can attribute to this cluster: its own children and the pids of its run files), and its
S3 client. `ops/chaos.py` holds the workload, the nemesis and the check."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.envfile import read_env
from ops.localports import free_port

FAST_ENV = {"TESSERA_REPAIR_SWEEP_S": "0.5", "TESSERA_REPAIR_DOWN_GRACE_S": "3",
            "TESSERA_ORPHAN_GRACE_S": "10", "TESSERA_SCRUB_RATE_MBPS": "100",
            "TESSERA_SCRUB_PAUSE_S": "1", "TESSERA_DEEP_SCRUB_RATE_MBPS": "64",
            "TESSERA_DEEP_SCRUB_PAUSE_S": "1"}
ZONE_HOSTS = [f"127.0.{z}.{i}" for z in (1, 2, 3) for i in (1, 2, 3, 11, 12)]
READY_S = 90.0


def descendants(roots: set[int]) -> set[int]:
    """`roots` and every process descended from one of them (from /proc's parent pids)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (d / "stat").read_text()  # "pid (comm) state ppid ...": comm may hold ")"
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(
                    int(d.name))
    out: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


class ChaosCluster:
    """`tessera up` plus the nodes the nemesis restarted itself."""

    def __init__(self, data: Path, env: dict[str, str]) -> None:
        self.data = data
        self.env_base = env
        self.port, self.admin_port = free_port(), free_port()
        self.node_port = free_port(ZONE_HOSTS)
        self.up: subprocess.Popen | None = None
        self.nodes: dict[str, subprocess.Popen] = {}
        self.env: dict[str, str] = {}
        self.stopped: set[str] = set()

    def start(self) -> None:
        self.up = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "up", "--data", str(self.data), "--port",
             str(self.port), "--admin-port", str(self.admin_port), "--node-port",
             str(self.node_port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, env=self.env_base)
        assert self.up.stdout is not None
        deadline = time.monotonic() + READY_S
        lines = []
        while time.monotonic() < deadline:
            line = self.up.stdout.readline()
            if not line:
                raise RuntimeError("tessera up exited: " + "".join(lines[-5:]).strip())
            lines.append(line)
            if "cluster ready" in line:
                break
        threading.Thread(target=lambda: [None for _ in self.up.stdout], daemon=True).start()
        self.env = read_env(self.data)

    def node_ids(self) -> list[str]:
        return sorted(p.name for p in (self.data / "nodes").iterdir())

    def pid(self, name: str) -> int:
        return int((self.data / "run" / f"{name}.pid").read_text())

    def signal(self, name: str, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
            os.kill(self.pid(name), sig)

    def kill_node(self, nid: str) -> None:
        self.signal(nid, signal.SIGKILL)
        p = self.nodes.pop(nid, None)
        if p is not None:
            p.wait()
        self.stopped.add(nid)

    def restart_node(self, nid: str) -> None:
        p = subprocess.Popen([sys.executable, "-m", "nodes", "--config",
                              str(self.data / "tessera.toml"), "--id", nid],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=self.env_base, start_new_session=True)
        assert p.stdout is not None
        line = p.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"node {nid} did not restart")
        threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
        (self.data / "run" / f"{nid}.pid").write_text(f"{p.pid}\n")
        self.nodes[nid] = p
        self.stopped.discard(nid)

    def stop(self) -> None:
        for nid in list(self.nodes):
            self.signal(nid, signal.SIGCONT)
        for p in self.nodes.values():
            p.terminate()
        for p in self.nodes.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.nodes.clear()
        if self.up is not None and self.up.poll() is None:
            for nid in self.node_ids():
                self.signal(nid, signal.SIGCONT)
            self.up.send_signal(signal.SIGTERM)
            try:
                self.up.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.up.pid, signal.SIGKILL)
                self.up.wait()
        self.up = None

    def restart_all(self, step: Callable[[], None] | None = None) -> None:
        """Stop every process and start the cluster again; `step` runs while all are
        stopped (the cluster starts again whatever it raises)."""
        self.stop()
        self.stopped.clear()
        try:
            if step is not None:
                step()
        finally:
            self.start()

    def crash(self) -> None:
        """SIGKILL every process of the cluster at once: `tessera up`, its gateway and its
        workers, the node forker and nodes, the nodes the nemesis restarted (`processes`);
        nothing stops cleanly. `start` brings the cluster up again over the same directory."""
        pids = self.processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for p in self.nodes.values():
            p.wait()
        if self.up is not None:
            self.up.wait()
        for pid in pids:  # gone before the next start binds their ports
            wait_gone(pid)
        self.nodes.clear()
        self.stopped.clear()
        self.up = None

    def processes(self) -> list[int]:
        """The pids of this cluster's processes: the `tessera up` and the nodes this object
        started, the gateway, node forker and nodes the directory's run/*.pid files name
        (checked against their command line: a reused pid is not ours), and every
        descendant of those. Never one that only names the directory on its command line
        (a `sudo`, `timeout` or `nohup` wrapping `tessera chaos --data DIR` itself)."""
        from ops.localcluster import left_running

        roots = set(left_running(self.data, wait_s=0))
        roots.update(p.pid for p in self.nodes.values() if p.poll() is None)
        if self.up is not None and self.up.poll() is None:
            roots.add(self.up.pid)
        return sorted(descendants(roots))

    def shard_files(self) -> list[Path]:
        return sorted(p for p in (self.data / "nodes").glob("*/shards/*/*/*") if p.is_file())

    def s3(self, attempts: int = 0) -> Any:
        """A boto3 client; `attempts` > 0: retries as the SDKs' standard mode does (503s
        included) up to that many attempts in all, else none: one attempt, every answer seen
        (botocore's `max_attempts` counts retries, `total_max_attempts` every attempt)."""
        import boto3
        from botocore.config import Config as BotoConfig

        from ops.botoconfig import no_retries

        limits: dict[str, Any] = {"connect_timeout": 3, "read_timeout": 20}
        config = (BotoConfig(retries={"total_max_attempts": attempts, "mode": "standard"},
                             **limits) if attempts else no_retries(**limits))
        return boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"],
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
                            region_name=self.env["AWS_DEFAULT_REGION"], config=config)

    def status(self) -> dict[str, Any]:
        from ops.admincli import admin_request

        return admin_request("GET", "/status", env=self.env)


def wait_gone(pid: int, timeout: float = 30.0) -> None:
    """Until process `pid` no longer runs (a zombie of another parent counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return
        if state == "Z":
            return
        time.sleep(0.05)
