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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from storage.archive import ArchiveService
from storage.buckets import BucketService
from storage.cluster import Cluster
from storage.config import NodeSpec
from storage.crypto.keys import FileRootKey
from storage.health import HealthTracker
from storage.keyspace import (
    RESTORE_EXPIRY,
    RESTORE_QUEUE,
    access_log_key,
    archive_job_key,
    gc_key,
    member_key,
    pack,
    repair_key,
    rewrap_key,
    shred_key,
    space,
    tenant_key,
    urgent_repair_key,
)
from storage.lifecycle_clock import LifecycleClock
from storage.membership import MembershipWatcher, add_node
from storage.metadata import MetadataStore, Txn, prefix_end
from storage.metadata.etcd import EtcdStore
from storage.records import pack as pack_record
from storage.stripes import StripeStore
from storage.tenants import TenantService
from storage.testing.simnodes import SimNodes
from storage.workers import WorkerState
from storage.workers import accesslog as accesslog_mod
from storage.workers import gc as gc_mod
from storage.workers import keys as keys_mod
from storage.workers import restore as restore_mod
from storage.workers.accesslog import AccessLogDelivery
from storage.workers.gc import GarbageCollector
from storage.workers.keys import Rewrapper, ShredScheduler
from storage.workers.lifecycle import LifecycleWorker
from storage.workers.rebalance import Rebalancer
from storage.workers.reclaim import TenantReclaimer
from storage.workers.repair import RepairWorker
from storage.workers.restore import RestoreWorker
from storage.workers.runner import WorkerRunner
from storage.workers.wakes import Wakes
from tests.contract.conftest import empty_gc_queue
from tests.inproc import sim_config

pytestmark = pytest.mark.skipif(not os.environ.get("TESSERA_ETCD_ENDPOINTS"),
                                reason="no etcd cluster (etcd not installed)")
HOUR = 3600.0


async def _until(ok: Callable[[], bool], deadline_s: float = 120.0) -> None:
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


async def test_gc_sleeps_until_its_next_entry_is_due_or_one_is_queued(
        etcd: EtcdStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector no longer reads its queue every second on etcd: with an entry due in
    an hour it sleeps (the cap made an hour too, so only a wake can run it again), and an
    entry queued due now wakes it through the watch and is collected."""
    monkeypatch.setattr(gc_mod, "WATCHED_MAX_S", HOUR)
    await empty_gc_queue(etcd)  # or the collector takes an entry an earlier module left due
    cfg = sim_config(tmp_path, 4096)
    health = HealthTracker(list(cfg.nodes), SimNodes(list(cfg.nodes)))
    gc = GarbageCollector(etcd, StripeStore(cfg, SimNodes(list(cfg.nodes)), health, None,
                                            None))  # type: ignore[arg-type]
    later, now = secrets.token_bytes(16), secrets.token_bytes(16)
    later_key = gc_key(time.time_ns() + int(HOUR * 1e9), later)
    await etcd.put(later_key, pack_record({"nodes": []}))
    wakes = Wakes(etcd)
    runner = WorkerRunner(wakes=wakes)
    runner.start(gc)
    try:
        await _until(lambda: gc._next_due_ns is not None and space("G")[0] in wakes.watching)
        assert gc.watched_idle_s > HOUR - 60  # sleeps until the entry an hour away
        reads = etcd.round_trips
        now_key = gc_key(time.time_ns(), now)
        await etcd.put(now_key, pack_record({"nodes": []}))
        await _until(lambda: gc.deleted >= 1)  # woken by the entry (no poll for an hour)
        # the put, the read it woke, the delete, and the read its own delete wakes: no polls
        assert etcd.round_trips - reads <= 4
        assert await etcd.get(now_key) is None and await etcd.get(later_key) is not None
    finally:
        await runner.stop()
        await etcd.txn(Txn(deletes=(later_key,)))


async def time_now() -> float:
    """A `LockNow` (no shred is due in the test that passes it: never asked)."""
    return time.time()


async def test_the_shred_scheduler_sleeps_until_a_shred_is_due(
        etcd: EtcdStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Watched, it does not read the schedule every second: it pauses until the earliest
    scheduled shred falls due (nothing is due here, so no tenant is touched)."""
    monkeypatch.setattr(keys_mod, "WATCHED_MAX_S", HOUR)
    key = shred_key("wk" + secrets.token_hex(4))
    await etcd.put(key, pack_record({"due": time.time() + 600}))
    try:
        scheduler = ShredScheduler(etcd, None, time_now)  # type: ignore[arg-type]
        assert scheduler.watched_idle_s == HOUR  # nothing read yet
        assert await scheduler.step() is WorkerState.IDLE
        assert 500 < scheduler.watched_idle_s <= 600
    finally:
        await etcd.delete(key)


async def test_the_restore_worker_sleeps_until_a_job_is_due_or_one_is_queued(
        etcd: EtcdStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It no longer reads its two queues every second on etcd: with a restore job due in
    an hour it sleeps (the cap made an hour too, so only a wake can run it again), and a
    restored copy queued to expire now (under the other queue) wakes it and is retired."""
    monkeypatch.setattr(restore_mod, "WATCHED_MAX_S", HOUR)
    archive = ArchiveService(sim_config(tmp_path, 4096), etcd, None, None)  # type: ignore[arg-type]
    worker = RestoreWorker(archive)
    name = "wk" + secrets.token_hex(4)
    job = archive_job_key(RESTORE_QUEUE, time.time_ns() + int(HOUR * 1e9), name, "k", "null")
    await etcd.put(job, pack_record({}))
    wakes = Wakes(etcd)
    runner = WorkerRunner(wakes=wakes)
    runner.start(worker)
    copy = archive_job_key(RESTORE_EXPIRY, time.time_ns(), name, "k", "null")
    try:
        await _until(lambda: archive.next_due_ns[RESTORE_QUEUE] is not None
                     and worker.wake_prefixes[1] in wakes.watching)
        assert worker.watched_idle_s > HOUR - 60  # sleeps until the job an hour away
        reads = etcd.round_trips
        await etcd.put(copy, pack_record({"stripes": []}))
        await _until(lambda: archive.stats.restores_expired >= 1)  # woken (no poll for an hour)
        trips = etcd.round_trips - reads
        assert await etcd.get(copy) is None and await etcd.get(job) is not None
        # the put; the woken step's reads (2 queues, the version's records) and delete; the
        # step its own delete wakes: no polls
        assert trips <= 8
    finally:
        await runner.stop()
        await etcd.txn(Txn(deletes=(job, copy)))


async def test_the_access_log_delivery_sleeps_until_a_batch_is_due_or_one_is_staged(
        etcd: EtcdStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """It no longer scans the staging area every second on etcd: with a batch due in an
    hour it sleeps (the cap made an hour too), and a batch staged long ago for a target
    that is gone wakes it and is dropped (as AWS drops undeliverable logs)."""
    monkeypatch.setattr(accesslog_mod, "WATCHED_MAX_S", HOUR)
    cluster = SimpleNamespace(meta=etcd, buckets=BucketService(etcd, "us-east-1"))
    delivery = AccessLogDelivery(cluster, 2.0)  # type: ignore[arg-type]
    source = "wk" + secrets.token_hex(4)
    batch = {"logging": {"target_bucket": "wk-gone-" + secrets.token_hex(4)},
             "lines": ["one line"], "source_tenant": "t"}
    waiting = access_log_key(source + "a", time.time_ns() + int(HOUR * 1e9), "x")
    await etcd.put(waiting, pack_record(batch))
    wakes = Wakes(etcd)
    runner = WorkerRunner(wakes=wakes)
    runner.start(delivery)
    due = access_log_key(source + "b", time.time_ns() - 10**10, "y")
    try:
        await _until(lambda: delivery._next_due is not None
                     and AccessLogDelivery.wake_prefix in wakes.watching)
        assert delivery.watched_idle_s > HOUR - 60  # sleeps until the batch an hour away
        await etcd.put(due, pack_record(batch))
        await _until(lambda: delivery.stats.dropped >= 1)  # woken (no poll for an hour)
        # (counted only once the batch's delete committed: accesslog.py `_dropped`)
        assert await etcd.get(due) is None and await etcd.get(waiting) is not None
    finally:
        await runner.stop()
        await etcd.txn(Txn(deletes=(waiting, due)))


async def test_a_new_lifecycle_day_wakes_the_lifecycle_worker(
        etcd: EtcdStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The day length is no longer read every second on etcd: with passes an hour apart and
    clock checks made an hour apart too, only the watch on the override can tell the worker
    of a 4 s day, after which it passes again within a quarter of that day."""
    monkeypatch.setattr(LifecycleWorker, "CLOCK_CHECK_S", HOUR)
    monkeypatch.setattr(LifecycleWorker, "CLOCK_CHECK_WATCHED_S", HOUR)
    cfg = sim_config(tmp_path, 4096)
    tenants = TenantService(etcd, FileRootKey(tmp_path / "root.key"))
    pool = ThreadPoolExecutor(1)
    cluster = Cluster.wire(cfg, etcd, tenants, SimNodes(list(cfg.nodes)), pool, pool)
    clock = LifecycleClock(etcd, cfg)
    await clock.set_day_seconds(None)
    worker = LifecycleWorker(cluster.lifecycle, HOUR)
    wakes = Wakes(etcd)
    runner = WorkerRunner(wakes=wakes)
    runner.start(worker)
    try:
        await _until(lambda: worker.last is not None
                     and LifecycleWorker.wake_prefix in wakes.watching)
        first = worker.last
        assert worker.watched and worker.watched_idle_s > HOUR - 60
        await clock.set_day_seconds(4.0)
        await _until(lambda: worker.last is not first)  # a pass within a second, not an hour
        assert cluster.lifecycle.day_s == 4.0
    finally:
        await runner.stop()
        await clock.set_day_seconds(None)
        pool.shutdown()


def test_queue_driven_workers_name_their_queue() -> None:
    """The workers idle only while their queue is empty are woken by it: repair by a damage
    entry (urgent ones included), rewrap by a rotation's marker."""
    assert urgent_repair_key(b"\x01").startswith(RepairWorker.wake_prefix)
    assert repair_key(b"\x01").startswith(RepairWorker.wake_prefix)
    assert rewrap_key("t1").startswith(Rewrapper.wake_prefix)
    assert gc_key(1, b"\x01").startswith(GarbageCollector.wake_prefix)
    assert tenant_key("t1").startswith(TenantReclaimer.wake_prefix)  # a shred
    assert member_key("n1").startswith(Rebalancer.wake_prefix)  # a drain
    assert shred_key("t1").startswith(ShredScheduler.wake_prefix)  # a scheduled shred
    assert access_log_key("b", 1, "u").startswith(AccessLogDelivery.wake_prefix)  # staged
    assert [archive_job_key(q, 1, "b", "k", "v").startswith(p)  # a restore job, a copy
            for q, p in zip((RESTORE_QUEUE, RESTORE_EXPIRY), RestoreWorker.wake_prefixes,
                            strict=True)] == [True, True]
