"""Shared fixtures: a real local cluster (`tessera up`) per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster


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
