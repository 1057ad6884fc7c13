"""A test run killed with SIGKILL leaves no cluster or etcd behind.

`tessera up` and etcd run in sessions of their own and pytest gets no chance to run a
fixture's teardown on SIGKILL: `tessera up` sees its starter exit ($TESSERA_EXIT_WITH_PID, set
by tests/conftest.py) and stops its whole tree; etcd members get PR_SET_PDEATHSIG. The FUSE
daemon's case is in test_volumes.py (run with the other block-volume modules).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster
from tests.integration.killed_run import CLUSTER_TEST, ETCD_TEST, run_and_kill

STOPPED_WITHIN_S = 90  # one 15 s grace, then SIGKILL; the old per-child grace took 240 s


def test_sigkilled_pytest_leaves_no_cluster(tmp_path: Path) -> None:
    run_and_kill(tmp_path, CLUSTER_TEST)


@pytest.mark.skipif(shutil.which("etcd") is None, reason="needs the etcd binary")
def test_sigkilled_pytest_leaves_no_etcd(tmp_path: Path) -> None:
    """etcd members a test starts itself (tests/contract) die with the test run too."""
    run_and_kill(tmp_path, ETCD_TEST)


def test_up_stops_stuck_children_within_one_grace(fresh_cluster: LocalCluster) -> None:
    """Children that ignore SIGTERM (here: stopped) are SIGKILLed one grace (15 s) after it,
    together: a stuck client used to keep nodes stopping, each adding 15 s (16 x 15 s here)."""
    assert fresh_cluster.proc is not None
    stuck = [int(p.read_text()) for p in (fresh_cluster.data / "run").glob("*.pid")]
    assert len(stuck) >= 15, stuck
    try:
        for pid in stuck:
            os.kill(pid, signal.SIGSTOP)
        fresh_cluster.proc.send_signal(signal.SIGTERM)
        fresh_cluster.proc.wait(STOPPED_WITHIN_S)  # old code: TimeoutExpired
    finally:
        for pid in stuck:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
