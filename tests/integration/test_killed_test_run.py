"""A test run killed with SIGKILL leaves no cluster behind.

`tessera up` runs in a session of its own (tests/integration/cluster.py) and pytest gets no
chance to run a fixture's teardown on SIGKILL; the cluster must see its starter exit
($TESSERA_EXIT_WITH_PID, set by tests/conftest.py) and stop its whole tree by itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 45  # `tessera up` stops its children; each gets up to 15 s to exit cleanly

INNER_TEST = '''
import os
import threading
from pathlib import Path


def test_start_cluster_and_hang(fresh_cluster):
    run = fresh_cluster.data / "run"
    pids = [fresh_cluster.proc.pid, *(int(p.read_text()) for p in run.glob("*.pid"))]
    out = Path(os.environ["REPORT"])
    out.with_suffix(".tmp").write_text(" ".join(map(str, pids)))
    out.with_suffix(".tmp").rename(out)
    threading.Event().wait()  # until killed
'''


def _alive(pid: int) -> bool:
    """`pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_for(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_sigkilled_pytest_leaves_no_cluster(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    report = tmp_path / "pids"
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
    try:
        _wait_for(lambda: report.exists() or inner.poll() is not None, 120,
                  "the inner test never started its cluster")
        assert inner.poll() is None, "the inner pytest exited before its cluster was up"
        pids = [int(p) for p in report.read_text().split()]
        assert len(pids) > 2 and all(map(_alive, pids)), pids
        inner.kill()
        inner.wait()
        _wait_for(lambda: not any(map(_alive, pids)), GONE_WITHIN_S,
                  f"left running after pytest was killed: {[p for p in pids if _alive(p)]}")
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
        for pid in pids:  # the old code's leftovers: stopped here, not left to the machine
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
