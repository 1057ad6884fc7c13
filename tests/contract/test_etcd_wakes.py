"""Idle loops on etcd are woken by watches instead of polling (storage/workers/wakes.py).

Each idle poll on etcd is a linearizable read through Raft; the repair worker polled its
queue 4 times a second and every gateway process re-read the membership overlay every 2 s.
Here the pauses are made an hour long, so a loop that runs again within the test's deadline
can only have been woken by the watch: a worker by a change under its `wake_prefix`, the
membership watcher by an `(M, …)` record. Real 3-member etcd (conftest.py), real runner.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from storage.config import NodeSpec
from storage.health import HealthTracker
from storage.keyspace import member_key, pack, repair_key, rewrap_key, urgent_repair_key
from storage.membership import MembershipWatcher, add_node
from storage.metadata import MetadataStore, Txn, prefix_end
from storage.metadata.etcd import EtcdStore
from storage.testing.simnodes import SimNodes
from storage.workers import WorkerState
from storage.workers.keys import Rewrapper
from storage.workers.repair import RepairWorker
from storage.workers.runner import WorkerRunner
from storage.workers.wakes import Wakes
from tests.inproc import sim_config

pytestmark = pytest.mark.skipif(not os.environ.get("TESSERA_ETCD_ENDPOINTS"),
                                reason="no etcd cluster (etcd not installed)")
HOUR = 3600.0


@pytest.fixture
async def etcd() -> AsyncIterator[EtcdStore]:
    s = await EtcdStore.open(tuple(os.environ["TESSERA_ETCD_ENDPOINTS"].split(",")))
    try:
        yield s
    finally:
        await s.close()


async def _until(ok: Callable[[], bool], deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not ok():
        assert time.monotonic() < deadline, "not woken within the deadline"
        await asyncio.sleep(0.02)


class ReadingWorker:
    """Reads its prefix every step and keeps what it saw; idle, with hour-long pauses, so it
    can only see a later change if the change woke it."""

    name = "reading"
    idle_s = HOUR
    watched_idle_s = HOUR

    def __init__(self, meta: MetadataStore, prefix: bytes) -> None:
        self.wake_prefix = prefix
        self._meta = meta
        self.seen: list[bytes] | None = None

    async def step(self) -> WorkerState:
        items = await self._meta.range(self.wake_prefix, prefix_end(self.wake_prefix))
        self.seen = [i.key for i in items]
        return WorkerState.IDLE


async def test_an_idle_worker_is_woken_by_a_change_under_its_prefix(etcd: EtcdStore) -> None:
    prefix = pack("wk" + secrets.token_hex(4))
    wakes = Wakes(etcd)
    runner = WorkerRunner(wakes=wakes)
    worker = ReadingWorker(etcd, prefix)
    runner.start(worker)
    try:
        await _until(lambda: worker.seen == [] and prefix in wakes.watching)
        await etcd.put(prefix + b"job", b"1")
        await _until(lambda: worker.seen == [prefix + b"job"])
        await etcd.delete(prefix + b"job")
        await _until(lambda: worker.seen == [])
    finally:
        await runner.stop()
        await etcd.txn(Txn(deletes=(prefix + b"job",)))


async def test_membership_change_reaches_a_watching_process_at_once(etcd: EtcdStore,
                                                                    tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, 4096)
    health = HealthTracker(list(cfg.nodes), SimNodes(list(cfg.nodes)))
    watcher = MembershipWatcher(etcd, cfg, health, interval_s=HOUR)
    node = "wk-" + secrets.token_hex(4)
    watcher.start()
    try:
        await _until(lambda: bool(watcher._wakes.watching))
        await add_node(etcd, cfg, NodeSpec(id=node, zone="az1", address="127.0.9.9:1"))
        await _until(lambda: node in {n.id for n in health.nodes})
    finally:
        await watcher.stop()
        await etcd.delete(member_key(node))


def test_queue_driven_workers_name_their_queue() -> None:
    """The workers idle only while their queue is empty are woken by it: repair by a damage
    entry (urgent ones included), rewrap by a rotation's marker."""
    assert urgent_repair_key(b"\x01").startswith(RepairWorker.wake_prefix)
    assert repair_key(b"\x01").startswith(RepairWorker.wake_prefix)
    assert rewrap_key("t1").startswith(Rewrapper.wake_prefix)
