"""A write refused while the nodes' disks are full says "storage full" even when some of its
first targets failed for another reason (seen in CI under load: the chaos test
`test_a_cluster_whose_one_disk_fills_keeps_serving_and_recovers` said "Too few storage
nodes are reachable" when another node failed at the same time). The rule
(`storage.fullness.refused_for_space`): full when the nodes not known full, by what they
say of their disks, are fewer than the write quorum; the refusal's causes name every node
tried for each shard left unwritten (`storage/spares.py`).

Simulated nodes, 9 in 3 zones, profile 4+2 (write quorum 5): every shard write is refused
with the node's 507 full-disk answer, except the first attempt on two of the shards, which
fails as an unreachable node does (that node answers no probe). The first targets then
give 4 full refusals; the three spares are full too, which makes 7 nodes known full and 2
not, whether or not a spare was tried for the shards whose targets were unreachable
(shards 0-2 get the three spares).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.s3.errors_map import STORAGE_FULL, to_s3_error
from storage.config import NodeSpec, config_from_mapping
from storage.errors import NODE_DISK_FULL, QuorumNotReached
from storage.objects import PutOptions
from storage.shards.client import NodeError
from storage.shards.ids import parse_shard_id
from storage.shards.slot import ShardSlot
from storage.testing.simnodes import SimNodes
from tests.inproc import wired_cluster

SIZES = {"small": 10_000, "whole": 1 << 20}  # batched small shards; one whole shard each


class FullNodes(SimNodes):
    """Every disk full; the first attempt on each of `unreachable` (shard indexes) fails
    as a node that cannot be reached does, and that node answers no health probe either.
    The others' probes say their disks have no free byte. `attempts`: (node, shard
    index, answer)."""

    def __init__(self, nodes: list[NodeSpec], unreachable: set[int]) -> None:
        super().__init__(nodes)
        self.unreachable = set(unreachable)
        self.attempts: list[tuple[str, int, str]] = []

    async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]:
        if (node.id, "unreachable") in {(a[0], a[2]) for a in self.attempts}:
            raise NodeError(node.id, "Cannot connect to host (injected)")
        return {**await super().health(node, timeout_s), "free_bytes": 0}

    async def put_shard(self, node: NodeSpec, sid: str,
                        body: AsyncIterator[bytes | memoryview] | bytes | ShardSlot,
                        segments: int, length: int | None = None, *,
                        replace: bool = False) -> None:
        index = parse_shard_id(sid)[1]
        if index in self.unreachable:
            self.unreachable.discard(index)
            self.attempts.append((node.id, index, "unreachable"))
            raise NodeError(node.id, "Cannot connect to host (injected)")
        self.attempts.append((node.id, index, "full"))
        raise NodeError(node.id, f"PUT 507 {NODE_DISK_FULL}", 507)


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _cfg(tmp: Path) -> Any:
    nodes = [{"id": f"n{z * 3 + i + 1}", "zone": f"az{z + 1}",
              "address": f"127.0.{z + 1}.{i + 1}:1"} for z in range(3) for i in range(3)]
    return config_from_mapping({"data_dir": str(tmp), "nodes": nodes,
                                "profiles": {"standard": {"k": 4, "m": 2}}}, tmp)


@pytest.mark.parametrize("unreachable", [(0, 1), (4, 5)], ids=["spared", "not-spared"])
@pytest.mark.parametrize("kind", sorted(SIZES))
def test_a_refusal_on_full_disks_says_full_though_other_nodes_failed_too(
        tmp_path: Path, kind: str, unreachable: tuple[int, int]) -> None:
    async def scenario() -> QuorumNotReached:
        cfg = _cfg(tmp_path)
        sim = FullNodes(list(cfg.nodes), unreachable=set(unreachable))
        async with wired_cluster(tmp_path, cfg, sim) as c:  # type: ignore[arg-type]
            b = await c.buckets.create("t", "bk")
            with pytest.raises(QuorumNotReached) as exc:
                await c.objects.put(b, "k", _body(bytes(SIZES[kind])),
                                    PutOptions(size_hint=SIZES[kind]))
            # what the test stands on: the first targets were 4 full and 2 unreachable,
            # then the three other nodes were tried as spares (and were full)
            first, spares = sim.attempts[:6], sim.attempts[6:]
            assert sorted(a[2] for a in first) == ["full"] * 4 + ["unreachable"] * 2, first
            assert [a[2] for a in spares] == ["full"] * 3, spares
            assert len({a[0] for a in sim.attempts}) == 9, sim.attempts
            return exc.value

    refused = asyncio.run(scenario())
    assert refused.full, refused.causes
    err = to_s3_error(refused, "bk", "k")
    assert (err.status, err.code, err.message) == (503, "ServiceUnavailable", STORAGE_FULL)
    # one cause per shard left unwritten, naming each node tried for it
    assert len(refused.causes) == 6, refused.causes
    assert sum(c.count(NODE_DISK_FULL) for c in refused.causes) == 7, refused.causes
    assert sum(c.count(", then spare node n") for c in refused.causes) == 3, refused.causes


def test_a_refusal_with_too_few_nodes_answering_is_not_called_full(tmp_path: Path) -> None:
    # The rule's other side: when the failures that were not full disks alone keep the
    # quorum from holding, the refusal says too few nodes are reachable.
    async def scenario() -> QuorumNotReached:
        cfg = _cfg(tmp_path)
        sim = FullNodes(list(cfg.nodes), unreachable=set(range(6)))
        async with wired_cluster(tmp_path, cfg, sim) as c:  # type: ignore[arg-type]
            b = await c.buckets.create("t", "bk")
            with pytest.raises(QuorumNotReached) as exc:
                await c.objects.put(b, "k", _body(bytes(SIZES["small"])),
                                    PutOptions(size_hint=SIZES["small"]))
            return exc.value

    refused = asyncio.run(scenario())
    assert not refused.full, refused.causes
