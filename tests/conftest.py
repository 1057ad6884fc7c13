"""Shared fixtures: a real local cluster (`tessera up`) per test session (per pytest-xdist
worker when the suite runs on several: `-n 2 --dist loadgroup`, README)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.integration.cluster import LocalCluster

# Tests never fail on timing: hypothesis's per-example deadline (200 ms) and its too-slow
# health check measure the machine's load, not the code (a loaded 2-core CI box hit both).
settings.register_profile("tessera", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tessera")

# Block-volume modules: loop devices, FUSE and ext4 mounts, and one compares the machine's
# loop devices before and after. Under pytest-xdist they run on one worker, one after another.
MACHINE_WIDE = frozenset({
    "test_admin_volumes.py", "test_block_fuse_threads.py", "test_volume_fencing.py",
    "test_volume_journal_crash.py", "test_volume_model.py", "test_volume_zone.py",
    "test_volumes.py",
})


@pytest.hookimpl(tryfirst=True)  # before xdist names each test's group from its marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`-n N --dist loadgroup`): each module's tests on one worker, so a
    module-scoped cluster starts once, and the block-volume modules together on one."""
    if not getattr(config.option, "loadgroup", False):  # set in xdist's workers only
        return
    for item in items:
        group = "block-volumes" if item.path.name in MACHINE_WIDE else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One cluster shared by tests that do not break it."""
    c = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield c
    c.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of its own, for tests that kill processes or damage data."""
    c = LocalCluster(tmp_path / "data").start()
    yield c
    c.stop()


@pytest.fixture
def s3(cluster: LocalCluster):
    return cluster.client()
