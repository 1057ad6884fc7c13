"""A test run killed with SIGKILL leaves no cluster or etcd behind.

`tessera up` and etcd run in sessions of their own and pytest gets no chance to run a
fixture's teardown on SIGKILL: `tessera up` sees its starter exit ($TESSERA_EXIT_WITH_PID, set
by tests/conftest.py) and stops its whole tree; etcd members get PR_SET_PDEATHSIG. The FUSE
daemon's case is in test_volumes.py (run with the other block-volume modules).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.killed_run import CLUSTER_TEST, ETCD_TEST, run_and_kill


def test_sigkilled_pytest_leaves_no_cluster(tmp_path: Path) -> None:
    run_and_kill(tmp_path, CLUSTER_TEST)


@pytest.mark.skipif(shutil.which("etcd") is None, reason="needs the etcd binary")
def test_sigkilled_pytest_leaves_no_etcd(tmp_path: Path) -> None:
    """etcd members a test starts itself (tests/contract) die with the test run too."""
    run_and_kill(tmp_path, ETCD_TEST)
