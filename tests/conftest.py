"""Shared fixtures: a real local cluster (`tessera up`) per test session."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from storage.starterdeath import ENV as EXIT_WITH_PID
from storage.starterdeath import with_starter
from tests.integration.cluster import LocalCluster
from tests.xdist_groups import (  # noqa: F401 - hooks
    pytest_collection_modifyitems,
    pytest_configure,
)

# Tests never fail on timing: hypothesis's per-example deadline (200 ms) and its too-slow
# health check measure the machine's load, not the code (a loaded 2-core CI box hit both).
# Deterministic: the same examples on every run (what hypothesis does itself when it sees a
# `CI` variable, which `.ci/run` may not set; review20j); TESSERA_HYPOTHESIS_RANDOM=1 for
# random exploration by hand.
_RANDOM = bool(os.environ.get("TESSERA_HYPOTHESIS_RANDOM"))
settings.register_profile("tessera", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow],
                          derandomize=not _RANDOM, **({} if _RANDOM else {"database": None}))
settings.load_profile("tessera")

# Every `tessera up` and FUSE daemon a test starts (in sessions of their own) stops when this
# process (pytest, or an xdist worker, and its pytest) exits, however it exits, even SIGKILL.
os.environ[EXIT_WITH_PID] = with_starter(os.getpid())
# The pack reserve (`nodes.packreserve`, a whole pack by default) of every node a test starts
# from the environment (clusters, `create_app`, `DiskShardStore`): nodes sharing one file
# system gain nothing from it, and 15 of 256 MiB per cluster would cost a CI run many GiB.
# The disk-full tests size their own.
os.environ.setdefault("TESSERA_PACKS_RESERVE_BYTES", str(256 * 1024))
# SIGTERM (`timeout`, a CI runner's cancel) ends the run as Ctrl-C does: fixtures finalize.
if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
    signal.signal(signal.SIGTERM, signal.default_int_handler)

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
def gateway_set_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Starts a cluster of its own with the given `[gateway]` lines (settings the default
    config does not hold) in its config from the first start."""
    started: list[LocalCluster] = []

    def start(*settings: str) -> LocalCluster:
        def edit(text: str) -> str:
            for line in settings:
                assert f"\n{line.split('=', 1)[0].strip()} =" not in text, line
            return text.replace("[gateway]\n", "[gateway]\n" + "".join(
                f"{line}\n" for line in settings), 1)

        started.append(LocalCluster(tmp_path / "data", first_config=edit))
        return started[-1].start()

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def s3(cluster: LocalCluster):
    return cluster.client()
