"""Contract tests run against every metadata backend: start a real 3-member etcd cluster.

The cluster is started when this directory is collected (the contract suite chooses its
backends at import, from TESSERA_ETCD_ENDPOINTS), on free ports in a temporary directory,
and stopped when the session ends. Set TESSERA_ETCD_ENDPOINTS to use an existing cluster.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ops.etcdcluster import ETCD_HOSTS, EtcdCluster, default_members
from storage.metadata.etcd import EtcdStore
from tests.integration.cluster import free_port

_ETCD = pytest.StashKey[tuple[EtcdCluster, Path]]()


def start_etcd(base: Path, token: str = "contract") -> EtcdCluster:
    """A fresh three-member cluster on free ports under `base`."""
    client = free_port(list(ETCD_HOSTS))
    peer = free_port(list(ETCD_HOSTS))
    while peer == client:
        peer = free_port(list(ETCD_HOSTS))
    return EtcdCluster(base / "data", default_members(client, peer), base / "logs",
                       token=token).start()


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("TESSERA_ETCD_ENDPOINTS") or shutil.which("etcd") is None:
        return
    base = Path(tempfile.mkdtemp(prefix="tessera-etcd-"))
    cluster = start_etcd(base)
    config.stash[_ETCD] = (cluster, base)
    os.environ["TESSERA_ETCD_ENDPOINTS"] = ",".join(cluster.endpoints)


def pytest_unconfigure(config: pytest.Config) -> None:
    started = config.stash.get(_ETCD, None)
    if started is None:
        return
    cluster, base = started
    cluster.stop()
    os.environ.pop("TESSERA_ETCD_ENDPOINTS", None)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_root_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One root key (`root.key` in this directory) for every test that keeps tenants in the
    session's etcd: `TenantService.load` unwraps the store-wide access-secret key that the
    first of them created, so they must all hold the same root key, whatever their order."""
    return tmp_path_factory.mktemp("etcd-root")


@pytest.fixture
async def etcd() -> AsyncIterator[EtcdStore]:
    """A client of the contract session's etcd cluster (its tests skip without one)."""
    s = await EtcdStore.open(tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(",")))
    try:
        yield s
    finally:
        await s.close()
