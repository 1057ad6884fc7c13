"""An acknowledged write holds k+m shards whenever k+m nodes can take them: a target that
fails mid-write has its shard sent to a spare before the ack (storage/spares.py `Spares._fill`).

A property over failure points, on the real object service over simulated nodes: which
node fails, on which of its shard writes, refusing the request or breaking it mid-body,
for each write path (batched small shards, whole one-segment shards, streamed multi-segment
and unknown-length shards), with a spare that fails too. (A streamed write whose two
targets fail at once falls below the write quorum mid-stream and is refused, as before.) Every acknowledged object must
name k+m distinct nodes that really hold its shards, zone-safely, and read back intact with
ANY m of those nodes down. With fewer than k+m usable nodes the write is acknowledged at
the write quorum, counted, and queued first (urgent) for repair.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import objects as objects_module
from storage import volume_io, volume_journal
from storage.cluster import Cluster
from storage.config import NodeSpec, config_from_mapping
from storage.errors import ObjectNotFound, QuorumNotReached
from storage.keyspace import repair_key, urgent_repair_key
from storage.objects import PutOptions
from storage.placement import place_for_write, place_spares, zone_safe
from storage.shards.client import NodeError
from storage.shards.ids import shard_id
from storage.shards.slot import ShardSlot
from storage.testing.simnodes import SimNodes
from tests.inproc import wired_cluster

K, M = 4, 2
# small (batched), 1 MiB (whole one-segment shard), 3 MiB (streamed, 3 segments)
SIZES = {"small": 10_000, "whole": 1 << 20, "streamed": 3 * (1 << 20) + 77}


class FaultyNodes(SimNodes):
    """Simulated nodes of which some fail from their Nth shard write on: refusing it before
    its body is taken ("refuse"), after its first chunk ("midway", a connection lost
    mid-body), or never answering it ("stall", until the writer gives up). Shard writes are
    counted per node."""

    def __init__(self, nodes: list[NodeSpec], faults: dict[str, tuple[int, str]]) -> None:
        super().__init__(nodes)
        self.faults = faults
        self.puts: Counter[str] = Counter()
        self.failed: set[str] = set()

    async def put_shard(self, node: NodeSpec, sid: str,
                        body: AsyncIterator[bytes | memoryview] | bytes | ShardSlot,
                        segments: int, length: int | None = None, *,
                        replace: bool = False) -> None:
        self.puts[node.id] += 1
        fault = self.faults.get(node.id)
        if fault is not None and self.puts[node.id] >= fault[0]:
            self.failed.add(node.id)
            if fault[1] == "stall":
                await asyncio.Event().wait()  # ends only when the writer's timeout cancels it
            if fault[1] == "midway" and not isinstance(body, (bytes, ShardSlot)):
                async for _ in body:
                    break
            raise NodeError(node.id, f"PUT 500 injected ({fault[1]})", 500)
        await super().put_shard(node, sid, body, segments, length, replace=replace)


def _cfg(tmp: Path) -> Any:
    nodes = [{"id": f"n{z * 3 + i + 1}", "zone": f"az{z + 1}",
              "address": f"127.0.{z + 1}.{i + 1}:1"} for z in range(3) for i in range(3)]
    return config_from_mapping({"data_dir": str(tmp), "nodes": nodes,
                                "profiles": {"standard": {"k": K, "m": M}}}, tmp)


async def _body(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 65536):
        yield data[i:i + 65536]


async def _read(c: Cluster, b: Any, key: str) -> bytes:
    v = await c.objects.head(b, key)
    return b"".join([bytes(x) async for x in c.objects.read(v)])


async def _check_any_m_down(c: Cluster, sim: SimNodes, b: Any, key: str, data: bytes) -> None:
    """The manifest names k+m distinct nodes that hold the shards, zone-safely, and the
    object reads back with every set of m of them down."""
    v = await c.objects.head(b, key)
    for p in v.parts:
        assert None not in p.nodes, f"acknowledged with a shard missing: {p.nodes}"
        assert len(set(p.nodes)) == K + M
        assert zone_safe(p.nodes, c.cfg.nodes, M), p.nodes
        for i, n in enumerate(p.nodes):
            assert shard_id(p.stripe_id, i) in sim.files[n], (i, n)  # named where it is
    held = sorted({n for p in v.parts for n in p.nodes if n})
    for down in itertools.combinations(held, M):
        sim.down = set(down)
        try:
            assert await _read(c, b, key) == data, down
        finally:
            sim.down = set()


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["small", "whole", "streamed", "unknown"]),
       victim=st.integers(1, 9), nth=st.integers(1, 3),
       mode=st.sampled_from(["refuse", "midway"]),
       spare_fails=st.booleans(), seed=st.integers(0, 2**16))
def test_acknowledged_write_survives_any_m_more_failures(
        kind: str, victim: int, nth: int, mode: str, spare_fails: bool, seed: int) -> None:
    rnd = random.Random(seed)

    async def scenario() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = _cfg(Path(tmp))
            faults = {f"n{victim}": (nth, mode)}
            if spare_fails:  # a second node (another zone) fails from its first write
                faults[f"n{(victim + 2) % 9 + 1}"] = (1, "refuse")
            sim = FaultyNodes(list(cfg.nodes), faults)
            async with wired_cluster(Path(tmp), cfg, sim) as c:  # type: ignore[arg-type]
                b = await c.buckets.create("t", "bk")
                size = SIZES["streamed" if kind == "unknown" else kind]
                objects = {}
                for i in range(3):  # the Nth write reaches the victim in one of them
                    data = rnd.randbytes(size)
                    hint = None if kind == "unknown" else len(data)
                    try:
                        await c.objects.put(b, f"k{i}", _body(data),
                                            PutOptions(size_hint=hint))
                    except QuorumNotReached:  # two targets failed mid-stream: refused, the
                        assert len(sim.failed) == 2  # client retries (503), nothing listed
                        with pytest.raises(ObjectNotFound):
                            await c.objects.head(b, f"k{i}")
                        continue
                    objects[f"k{i}"] = data
                for key, data in objects.items():
                    await _check_any_m_down(c, sim, b, key, data)
                assert c.stripes.spares.degraded == 0
    with mock.patch.object(objects_module, "new_stripe_id",
                           lambda: rnd.randbytes(16)):  # placement: one per example
        _run(scenario())


def test_fewer_than_k_plus_m_nodes_acknowledges_at_quorum_and_queues_urgent(
        tmp_path: Path) -> None:
    """Four of nine nodes down (a zone and one more): five usable, the write quorum; the
    write is acknowledged with five shards, counted degraded, and queued as urgent repair."""
    async def scenario() -> None:
        cfg = _cfg(tmp_path)
        sim = FaultyNodes(list(cfg.nodes), {})
        sim.down = {"n1", "n2", "n3", "n4"}
        async with wired_cluster(tmp_path, cfg, sim) as c:  # type: ignore[arg-type]
            for nid in sim.down:  # the health tracker knows them down (as after probes)
                for _ in range(10):
                    c.stripes._health.report_failure(nid, "down")
            b = await c.buckets.create("t", "bk")
            data = random.Random(1).randbytes(SIZES["whole"])
            await c.objects.put(b, "k", _body(data), PutOptions(size_hint=len(data)))
            v = await c.objects.head(b, "k")
            p = v.parts[0]
            assert sum(n is not None for n in p.nodes) == K + 1
            assert c.stripes.spares.degraded == 1
            assert await c.meta.get(urgent_repair_key(p.stripe_id)) is not None
            assert await c.meta.get(repair_key(p.stripe_id)) is None
            assert await _read(c, b, "k") == data
    _run(scenario())


def test_volume_extent_and_journal_writes_take_spares_too(tmp_path: Path) -> None:
    """Block volume extent and journal segment writes go through the same write: a target
    failing (its best-ranked node, so surely a target) leaves k+m shards all the same."""
    stripe = bytes(range(16))

    async def scenario() -> None:
        cfg = _cfg(tmp_path)
        victim = place_for_write(stripe, cfg.profile("standard"), list(cfg.nodes))[0].id
        sim = FaultyNodes(list(cfg.nodes), {victim: (1, "refuse")})
        async with wired_cluster(tmp_path, cfg, sim) as c:  # type: ignore[arg-type]
            svc = c.volumes
            await svc.create("t", "v", 2 << 20)
            h = await svc.open("t", "v", holder="h")
            with mock.patch.object(volume_io, "new_stripe_id", lambda: stripe):
                await h.write_extent(0, b"x" * h.extent_len(0))
            seg_stripe = next(s for s in (bytes([i]) * 16 for i in range(256))  # a target too
                              if victim in {n.id for n in place_for_write(
                                  s, cfg.profile("standard"), list(cfg.nodes))})
            with mock.patch.object(volume_journal, "new_stripe_id", lambda: seg_stripe):
                seg = await volume_journal.append(h, 1, [(0, b"abc")])
            for nodes in (h.pointer(0).nodes, seg.nodes):  # type: ignore[union-attr]
                assert None not in nodes and victim not in nodes, nodes
                assert len(set(nodes)) == K + M and zone_safe(nodes, cfg.nodes, M)
            assert victim in sim.failed and c.stripes.spares.spared == 2
    _run(scenario())


def test_volume_writes_spilled_over_a_zone_are_queued_for_repair(tmp_path: Path) -> None:
    """A zone down (three of nine nodes): every volume extent and journal segment stripe is
    complete (six shards) but holds three in a zone, more than m. Its commit queues it for
    repair (`Spares.repair_entry`, the check object commits use), not urgent (nothing
    missing); before, volume commits queued only short stripes and left this to the sweep."""
    async def scenario() -> None:
        cfg = _cfg(tmp_path)
        sim = FaultyNodes(list(cfg.nodes), {})
        sim.down = {"n1", "n2", "n3"}
        async with wired_cluster(tmp_path, cfg, sim) as c:  # type: ignore[arg-type]
            for nid in sim.down:  # the health tracker knows them down (as after probes)
                for _ in range(10):
                    c.stripes._health.report_failure(nid, "down")
            svc = c.volumes
            await svc.create("t", "v", 2 << 20)
            h = await svc.open("t", "v", holder="h")
            await h.write_extent(0, b"x" * h.extent_len(0))
            seg = await volume_journal.append(h, 1, [(0, b"abc")])
            for stripe, nodes in ((h.pointer(0).stripe, h.pointer(0).nodes),  # type: ignore[union-attr]
                                  (seg.stripe, seg.nodes)):
                assert None not in nodes and not zone_safe(nodes, cfg.nodes, M), nodes
                assert await c.meta.get(repair_key(stripe)) is not None, nodes
                assert await c.meta.get(urgent_repair_key(stripe)) is None
    _run(scenario())


def test_stalling_spares_are_bounded_by_one_deadline(tmp_path: Path) -> None:
    """A target stalls, and so does the spare its shard goes to: the whole fill has one
    deadline (the stall limit), so the write is acknowledged at the quorum (five shards,
    degraded, urgent) once it passes, instead of trying a second spare after another stall
    limit ((1 + m) stall limits in all before the ack). The second spare gets no write."""
    stripe = bytes(range(16))

    async def scenario() -> None:
        cfg = _cfg(tmp_path)
        prof = cfg.profile("standard")
        targets = place_for_write(stripe, prof, list(cfg.nodes))
        victim = targets[0]
        spare = place_spares(stripe, prof, list(cfg.nodes), targets[1:], {victim.id}, 1)[0]
        second = place_spares(stripe, prof, list(cfg.nodes), targets[1:],
                              {victim.id, spare.id}, 1)[0]
        sim = FaultyNodes(list(cfg.nodes), {victim.id: (1, "stall"), spare.id: (1, "stall")})
        async with wired_cluster(tmp_path, cfg, sim, stall_s=0.5) as c:  # type: ignore[arg-type]
            b = await c.buckets.create("t", "bk")
            data = random.Random(2).randbytes(SIZES["whole"])
            with mock.patch.object(objects_module, "new_stripe_id", lambda: stripe):
                await c.objects.put(b, "k", _body(data), PutOptions(size_hint=len(data)))
            p = (await c.objects.head(b, "k")).parts[0]
            assert p.nodes.count(None) == 1, p.nodes
            assert sim.puts[spare.id] == 1 and sim.puts[second.id] == 0, sim.puts
            assert c.stripes.spares.degraded == 1
            assert await c.meta.get(urgent_repair_key(p.stripe_id)) is not None
            assert await _read(c, b, "k") == data
    _run(scenario())
