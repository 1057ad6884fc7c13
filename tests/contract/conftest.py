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
from storage.crypto.keys import FileRootKey
from storage.keyspace import GC, space
from storage.metadata import MetadataStore, Txn
from storage.metadata.etcd import EtcdStore
from storage.metadata.etcd_tls import EtcdClientTLS, client_tls_in
from tests.integration.cluster import free_port

_ETCD = pytest.StashKey[tuple[EtcdCluster, Path]]()
ROOT_DIR_ENV = "TESSERA_CONTRACT_ETCD_ROOT_DIR"
# the session cluster's certificates (ops/etcdcerts.py layout); unset: its members check no
# client (an existing cluster named by TESSERA_ETCD_ENDPOINTS)
TLS_DIR_ENV = "TESSERA_ETCD_TLS_DIR"


def session_tls() -> EtcdClientTLS | None:
    """The client certificate of the session's etcd cluster (mutual TLS)."""
    d = os.environ.get(TLS_DIR_ENV)
    return client_tls_in(Path(d)) if d else None


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
    if config.getoption("numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ:
        # xdist's controller runs no test: each worker starts its own cluster, so tests on
        # two workers never share etcd's keyspace (one's GC pass collected the other's
        # entries) nor its store-wide system key (wrapped under each worker's root key).
        return
    base = Path(tempfile.mkdtemp(prefix="tessera-etcd-"))
    cluster = start_etcd(base)
    config.stash[_ETCD] = (cluster, base)
    os.environ["TESSERA_ETCD_ENDPOINTS"] = ",".join(cluster.endpoints)
    os.environ[TLS_DIR_ENV] = str(cluster.tls_dir)
    # xdist's workers inherit both: they share this (the controller's) etcd, so they must
    # share the root key that wraps the store-wide system key too (etcd_root_dir).
    FileRootKey(base / "root" / "root.key")  # made here, once: workers only read it
    os.environ[ROOT_DIR_ENV] = str(base / "root")


def pytest_unconfigure(config: pytest.Config) -> None:
    started = config.stash.get(_ETCD, None)
    if started is None:
        return
    cluster, base = started
    cluster.stop()
    os.environ.pop("TESSERA_ETCD_ENDPOINTS", None)
    os.environ.pop(TLS_DIR_ENV, None)
    os.environ.pop(ROOT_DIR_ENV, None)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_root_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One root key (`root.key` in this directory) for every test that keeps tenants in the
    session's etcd: `TenantService.load` unwraps the store-wide access-secret key that the
    first of them created, so they must all hold the same root key, whatever their order,
    and whichever xdist worker runs them: the workers share the controller's etcd, and a
    per-worker directory gave each worker its own key ("wrapped key failed authentication"
    in whichever worker came second)."""
    shared = os.environ.get(ROOT_DIR_ENV)
    return Path(shared) if shared else tmp_path_factory.mktemp("etcd-root")


@pytest.fixture
async def etcd() -> AsyncIterator[EtcdStore]:
    """A client of the contract session's etcd cluster (its tests skip without one)."""
    s = await EtcdStore.open(tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(",")), session_tls())
    try:
        yield s
    finally:
        await s.close()


async def empty_gc_queue(store: MetadataStore) -> None:
    """Delete every GC entry: a test counting what one collector pass deletes owns the
    queue (on etcd, the worker's session cluster keeps what earlier modules queued)."""
    start, end = space(GC)
    while items := await store.range(start, end):
        await store.txn(Txn(deletes=tuple(i.key for i in items)))
