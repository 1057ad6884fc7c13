"""review19g: the store-side worker fence must not leak into non-worker traffic.

A leased worker's step first starts the shared machinery (the SQLite committer task or the
etcd batcher's flight task is created by the first commit, here the step's), then its lease
is taken over while the step still runs. Client PUTs (not in a step) must still succeed,
alone and concurrently with the stale step's refused commits (etcd nests concurrent
transactions into one request). And what a step sets going for the whole process (the lying
shard recorder, shared with client reads) must not be refused for the step's lease.
Real object service over simulated nodes, real SQLite and the contract session's etcd.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from storage import retiring
from storage.cluster import Cluster
from storage.config import config_from_mapping
from storage.crypto.keys import FileRootKey
from storage.keyspace import GC, discarded_key, space, urgent_repair_key
from storage.keyspace import unpack as key_parts
from storage.leases import Lease, Leases
from storage.metadata import MetadataStore, open_store
from storage.metadata.fence import LeaseFenced
from storage.objects import PutOptions
from storage.records import unpack
from storage.shards.ids import shard_id
from storage.tenants import TenantService
from storage.testing.lies import lie
from storage.testing.simnodes import SimNodes
from storage.workers.gcfence import read_fence
from storage.workers.manifests import commit_shard_moves
from storage.workers.reclaim import TenantReclaimer
from storage.workers.stepfence import StepFence
from tests.contract.conftest import session_tls
from tests.contract.test_metadata_contract import BACKENDS

SEGMENT = 64 * 1024


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture(params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path: Path, etcd_root_dir: Path
                ) -> AsyncIterator[tuple[Cluster, MetadataStore, SimNodes, str]]:
    endpoints = tuple(e for e in os.environ.get("TESSERA_ETCD_ENDPOINTS", "").split(",") if e)
    meta = await open_store(request.param, str(tmp_path / "meta.db"), endpoints, session_tls())
    other = meta if request.param == "sqlite" else await open_store(
        request.param, str(tmp_path / "meta.db"), endpoints, session_tls())
    nodes = [{"id": f"n{z * 3 + i + 1}", "zone": f"az{z + 1}",
              "address": f"127.0.{z + 1}.{i + 1}:1"} for z in range(3) for i in range(3)]
    cfg = config_from_mapping({
        "data_dir": str(tmp_path), "cluster": {"segment_size": SEGMENT, "inline_max_bytes": 0},
        "profiles": {"standard": {"k": 4, "m": 2}}, "nodes": nodes}, tmp_path)
    root = etcd_root_dir if request.param == "etcd" else tmp_path
    tenants = TenantService(meta, FileRootKey(root / "root.key"))
    await tenants.load()
    tenant = "t" + os.urandom(4).hex()
    await tenants.create(tenant)
    sim = SimNodes(list(cfg.nodes))
    pool = ThreadPoolExecutor(2)
    cluster = Cluster.wire(cfg, meta, tenants, sim, pool, pool, gc_grace_s=0, stall_s=5)
    await cluster.buckets.create(tenant, "b" + tenant)
    try:
        yield cluster, other, sim, tenant
    finally:
        await meta.close()
        if other is not meta:
            await other.close()
        pool.shutdown()


async def test_client_puts_succeed_while_a_stale_step_holds_the_shared_committer(
        world: tuple[Cluster, MetadataStore, SimNodes, str]) -> None:
    cluster, other, _, tenant = world
    bucket = await cluster.buckets.get(tenant, "b" + tenant)
    name = "leak-" + os.urandom(4).hex()
    lease = await Leases(cluster.meta).acquire(name, "host/a:1/10", 60)
    assert lease is not None
    started, go, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    outcome: list[str] = []

    async def put(key: str, size: int = 2 * SEGMENT + 5) -> None:
        await cluster.objects.put(bucket, key, _body(os.urandom(size)),
                                  PutOptions(size_hint=size))

    async def stale_step() -> None:
        async with StepFence(lease).step():
            await put("worker-1")  # the step's commits start the shared committer / batcher
            started.set()
            await go.wait()  # meanwhile the lease changes hands
            try:
                await asyncio.gather(*(put(f"worker-2-{i}") for i in range(4)))
                outcome.append("applied")
            except LeaseFenced:
                outcome.append("fenced")
            await done.wait()  # the step is still running while clients PUT

    step = asyncio.create_task(stale_step())
    try:
        await asyncio.wait_for(started.wait(), 60)
        taken = await Leases(other).acquire(name, "host/a:1/11", 60, succeeds="host/a:1/")
        assert taken is not None and lease.valid()
        go.set()
        # clients concurrently with the stale step's refused commits, then alone
        await asyncio.gather(*(put(f"client-{i}") for i in range(8)))
        await asyncio.gather(*(put(f"client-late-{i}") for i in range(4)))
        done.set()
        await asyncio.wait_for(step, 60)
        assert outcome == ["fenced"]
        for i in range(8):
            assert (await cluster.objects.head(bucket, f"client-{i}")).size == 2 * SEGMENT + 5
    finally:
        done.set()
        go.set()
        step.cancel()
        await asyncio.gather(step, return_exceptions=True)


async def test_a_lie_a_stale_step_found_is_still_queued_by_a_client_read(
        world: tuple[Cluster, MetadataStore, SimNodes, str]) -> None:
    """LyingShards is one per process: the task recording a finding is created by whoever
    found it and copies its context. A step that found a lie while its lease changed hands
    has its recording refused (LeaseFenced, logged), and the same finding by a client read
    within RECENT_S is dropped as already known: the urgent repair is never queued."""
    cluster, other, sim, tenant = world
    bucket = await cluster.buckets.get(tenant, "b" + tenant)
    size = 3 * SEGMENT + 7
    await cluster.objects.put(bucket, "o", _body(os.urandom(size)), PutOptions(size_hint=size))
    v = await cluster.objects.head(bucket, "o")
    p = v.parts[0]
    sid = shard_id(p.stripe_id, 2)
    sim.files[p.nodes[2]][sid] = bytearray(lie(bytes(sim.files[p.nodes[2]][sid]), "o", None))
    name = "leak-" + os.urandom(4).hex()
    lease = await Leases(cluster.meta).acquire(name, "host/a:1/10", 60)
    assert lease is not None

    async def read() -> bytes:
        w = await cluster.objects.head(bucket, "o")
        return b"".join([c async for c in cluster.objects.read(w, on_damage=lambda *a: None)])

    # taken over; the old holder has not heard: its clock still says valid
    assert await Leases(other).acquire(name, "host/a:1/11", 60, succeeds="host/a:1/")
    assert lease.valid()

    async def stale_step() -> None:
        async with StepFence(lease).step():
            await read()  # a scrub or repair read finds the lie
            await cluster.stripes.lies.settle()

    await asyncio.wait_for(asyncio.create_task(stale_step()), 60)
    await read()  # a client reads the same object
    await cluster.stripes.lies.settle()
    assert await cluster.meta.get(urgent_repair_key(p.stripe_id)) is not None


# mend19g: what a stale step leaves behind when the store refuses its commits -------------

async def _taken_over(cluster: Cluster, other: MetadataStore) -> Lease:
    """A lease another process took over while its old holder still counts it valid."""
    name = "stale-" + os.urandom(4).hex()
    lease = await Leases(cluster.meta).acquire(name, "host/a:1/10", 60)
    assert lease is not None
    assert await Leases(other).acquire(name, "host/a:1/11", 60, succeeds="host/a:1/")
    assert lease.valid()
    return lease


async def _queued(meta: MetadataStore, stripe_id: bytes) -> list[dict[str, Any]]:
    """The GC queue's entries for `stripe_id`."""
    return [unpack(it.value) for it in await meta.range(*space(GC), limit=100_000)
            if key_parts(it.key)[-1] == stripe_id.hex()]


async def test_a_refused_repair_commit_queues_its_written_copies(
        world: tuple[Cluster, MetadataStore, SimNodes, str]) -> None:
    """commit_shard_moves refused for the lease must queue the copies it was given, as a
    given-up commit does: no manifest will name them (on the old code: only the orphan
    sweep, after its grace, finds them)."""
    cluster, other, _, tenant = world
    bucket = await cluster.buckets.get(tenant, "b" + tenant)
    size = 2 * SEGMENT + 3
    await cluster.objects.put(bucket, "r", _body(os.urandom(size)), PutOptions(size_hint=size))
    p = (await cluster.objects.head(bucket, "r")).parts[0]
    spare = next(n.id for n in cluster.cfg.nodes if n.id not in p.nodes)
    lease = await _taken_over(cluster, other)
    fence = await read_fence(cluster.meta, p.stripe_id)
    with pytest.raises(LeaseFenced):
        async with StepFence(lease).step():
            await commit_shard_moves(cluster.meta, p.stripe_id, list(p.nodes), {0: spare}, fence)
    assert (await cluster.objects.head(bucket, "r")).parts[0].nodes == p.nodes
    assert [e["nodes"] for e in await _queued(cluster.meta, p.stripe_id)] == [[spare]]


async def test_a_stale_steps_refused_put_queues_its_stripes(
        world: tuple[Cluster, MetadataStore, SimNodes, str]) -> None:
    """A PUT in a stale step (access-log delivery, an archive copy) whose commit the store
    refuses discards its stripes; that discard must not be refused too (on the old code it
    was: the stripes waited for the orphan sweep)."""
    cluster, other, _, tenant = world
    bucket = await cluster.buckets.get(tenant, "b" + tenant)
    before = {it.key for it in await cluster.meta.range(*space(GC), limit=100_000)}
    lease = await _taken_over(cluster, other)
    size = 3 * SEGMENT + 1
    with pytest.raises(LeaseFenced):
        async with StepFence(lease).step():
            await cluster.objects.put(bucket, "w", _body(os.urandom(size)),
                                      PutOptions(size_hint=size))
    # the entry this PUT queued, whatever its due time sorts after (not the last by key)
    queued = [it for it in await cluster.meta.range(*space(GC), limit=100_000)
              if it.key not in before]
    assert len(queued) == 1, [it.key for it in queued]
    assert "discarded" in unpack(queued[0].value)
    assert await cluster.meta.get(discarded_key(bytes.fromhex(key_parts(queued[0].key)[-1])))


async def _two_markers(meta: MetadataStore) -> list[bytes]:
    keys = []
    for i in range(2):
        k, v = retiring.stripes_marker("b", f"k{i}", [(os.urandom(16), ["n1"])], 0)
        await meta.put(k, v)
        keys.append(k)
    return keys


async def test_reclaim_stops_at_a_refused_marker(
        world: tuple[Cluster, MetadataStore, SimNodes, str]) -> None:
    """A marker's commit refused for the lease is not the marker's failure: the step ends
    with LeaseFenced (the runner stops the worker) rather than back off that marker and try
    every other one (on the old code: logged, backed off, the step went on)."""
    cluster, other, _, _ = world
    keys = await _two_markers(cluster.meta)
    lease = await _taken_over(cluster, other)
    worker = TenantReclaimer(cluster.meta, 0)
    with pytest.raises(LeaseFenced):
        async with StepFence(lease).step():
            await worker.step()
    assert all([await cluster.meta.get(k) for k in keys])
    # and a request's own finishing (retiring.finish_now) in a stale step stops there too
    with pytest.raises(LeaseFenced):
        async with StepFence(lease).step():
            await retiring.finish_now(cluster.meta, keys)
