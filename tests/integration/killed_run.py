"""Runs a tiny test in a pytest of its own, SIGKILLs that pytest once the test has started
its processes, and waits for them (and their mounts) to go by themselves."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from storage.pids import pid_running

REPO = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 45  # `tessera up` stops its children; each gets up to 15 s to exit cleanly

INNER_HEAD = '''
import json
import os
import subprocess
import sys
import threading
from pathlib import Path


def cluster_pids(cluster):
    return [cluster.proc.pid, *(int(p.read_text()) for p in (cluster.data / "run").glob("*.pid"))]


def report_and_hang(pids, mounts=(), loops=()):
    out = Path(os.environ["REPORT"])
    out.with_suffix(".tmp").write_text(json.dumps({"pids": list(pids), "mounts": list(mounts),
                                                   "loops": list(loops)}))
    out.with_suffix(".tmp").rename(out)
    threading.Event().wait()  # until killed
'''

CLUSTER_TEST = INNER_HEAD + '''

def test_start_cluster_and_hang(fresh_cluster):
    report_and_hang(cluster_pids(fresh_cluster))
'''

VOLUME_TEST = INNER_HEAD + '''

def test_mount_ext4_and_hang(fresh_cluster, tmp_path):
    env = {**os.environ, **fresh_cluster.env}
    for args in (["create", "v", "--size", "64M"],
                 ["mount", "--fs", "ext4", "v", str(tmp_path / "mnt")]):
        subprocess.run([sys.executable, "-m", "ops.cli", "volume", *args], env=env,
                       check=True, capture_output=True)
    (tmp_path / "mnt" / "f").write_bytes(b"x" * 65536)  # dirty in ext4's page cache
    st = json.loads(next((fresh_cluster.data / "volumes" / "mounts").glob("*.json"))
                    .read_text())
    report_and_hang([*cluster_pids(fresh_cluster), st["pid"]], [st["target"], st["fuse_dir"]],
                    [st["loop"]])
'''

ETCD_TEST = INNER_HEAD + '''

def test_start_etcd_and_hang(tmp_path):
    from tests.contract.conftest import start_etcd

    report_and_hang([p.pid for p in start_etcd(tmp_path).procs.values()])
'''


def _wait_for(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def run_and_kill(tmp_path: Path, inner_test: str) -> None:
    """Run `inner_test` in a pytest of its own until it reports what it started, SIGKILL
    that pytest, and wait for every reported process to be gone and every mount undone."""
    (tmp_path / "test_inner.py").write_text(inner_test)
    report = tmp_path / "started.json"
    env = {**os.environ, "REPORT": str(report)}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    # tests/conftest.py as a plugin: its fixtures, and what it sets for every test run
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "--basetemp", str(tmp_path / "inner"), "--rootdir", str(tmp_path),
         str(tmp_path / "test_inner.py")],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids: list[int] = []
    mounts: list[str] = []
    loops: list[str] = []
    try:
        _wait_for(lambda: report.exists() or inner.poll() is not None, 180,
                  "the inner test never reported what it started")
        assert inner.poll() is None, "the inner pytest exited before its cluster was up"
        started = json.loads(report.read_text())
        pids, mounts, loops = started["pids"], started["mounts"], started["loops"]
        assert len(pids) >= 3 and all(map(pid_running, pids)), pids
        assert all(map(_mounted, mounts)), mounts
        inner.kill()
        inner.wait()
        _wait_for(lambda: not any(map(pid_running, pids)), GONE_WITHIN_S,
                  f"left running after pytest was killed: {[p for p in pids if pid_running(p)]}")
        _wait_for(lambda: not any(map(_mounted, mounts)), GONE_WITHIN_S,
                  f"left mounted after pytest was killed: {[m for m in mounts if _mounted(m)]}")
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
        for pid in pids:  # the old code's leftovers: stopped here, not left to the machine
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for m in mounts:
            subprocess.run(["umount", "-l", m], capture_output=True)
        for dev in loops:
            subprocess.run(["losetup", "-d", dev], capture_output=True)
