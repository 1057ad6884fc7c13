"""A one-segment object too large for batching (a 1 MiB object: six shard files of 262,200
bytes) sends each whole shard to its node in one request, not through a per-shard stream;
larger objects still stream. The real gateway pipeline and wiring over in-memory nodes,
driven by boto3; the nodes only record what kind of body each shard PUT carried.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage.config import NodeSpec
from storage.shards.client import SMALL_SHARD_BYTES
from storage.shards.slot import ShardSlot
from storage.testing.simnodes import SimNodes
from tests.inproc import sim_config, sim_s3

BUCKET = "whole"


class RecordingNodes(SimNodes):
    """SimNodes that note, per streamed shard PUT, whether its body came whole (bytes, or
    in a `ShardSlot` of the stripe's one buffer) or as a stream."""

    def __init__(self, nodes: list[NodeSpec]) -> None:
        super().__init__(nodes)
        self.bodies: list[tuple[str, int]] = []  # (kind, bytes) per put_shard

    async def put_shard(self, node: NodeSpec, sid: str, body: Any, segments: int,
                        length: int | None = None, *, replace: bool = False) -> None:
        kind = ("slot" if isinstance(body, ShardSlot) else
                "whole" if isinstance(body, bytes) else "stream")
        await super().put_shard(node, sid, body, segments, length, replace=replace)
        self.bodies.append((kind, len(self.files[node.id][sid])))


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Any, RecordingNodes]]:
    cfg = sim_config(tmp_path, 1024)
    nodes = RecordingNodes(list(cfg.nodes))
    async with sim_s3(tmp_path, cfg, nodes, BUCKET) as s3:
        yield s3, nodes


def _body(size: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


async def _round_trip(s3: Any, key: str, body: bytes) -> None:
    put = await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key=key, Body=body)
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = await asyncio.to_thread(
        lambda: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert got == body


async def test_a_one_segment_object_sends_each_whole_shard_in_one_put(
        gateway: tuple[Any, RecordingNodes]) -> None:
    s3, nodes = gateway
    await _round_trip(s3, "one-mib", _body(1024 * 1024, 1))
    assert len(nodes.bodies) == 6  # 4+2, each shard one PUT with the whole file in its slot
    assert all(kind == "slot" and size > SMALL_SHARD_BYTES for kind, size in nodes.bodies)


async def test_a_partial_segment_above_the_batch_size_is_whole_too(
        gateway: tuple[Any, RecordingNodes]) -> None:
    s3, nodes = gateway
    await _round_trip(s3, "odd", _body(1024 * 1024 - 100, 2))  # shard files of 262,175 B
    assert [kind for kind, _ in nodes.bodies] == ["slot"] * 6


async def test_objects_of_several_segments_still_stream(
        gateway: tuple[Any, RecordingNodes]) -> None:
    s3, nodes = gateway
    await _round_trip(s3, "big", _body(2 * 1024 * 1024 + 5, 3))
    assert [kind for kind, _ in nodes.bodies] == ["stream"] * 6


async def test_a_one_segment_object_is_coded_in_place(
        gateway: tuple[Any, RecordingNodes], monkeypatch: pytest.MonkeyPatch) -> None:
    """Its segment is sealed and coded into one buffer (`encode_frames`), not through
    `encode`, which copies the segment three times and zero-fills the parity."""
    from storage.pipeline import StripeCodec

    def refused(*_: object) -> None:
        raise AssertionError("StripeCodec.encode used for a whole one-segment stripe")

    monkeypatch.setattr(StripeCodec, "encode", refused)
    s3, nodes = gateway
    await _round_trip(s3, "in-place", _body(1024 * 1024 - 7, 4))
    assert [kind for kind, _ in nodes.bodies] == ["slot"] * 6


class GroupNodes(RecordingNodes):
    """A transport with `put_shards` (as `NodeClient` has): the stripe's shards in one call."""

    def __init__(self, nodes: list[NodeSpec]) -> None:
        super().__init__(nodes)
        self.groups: list[int] = []

    async def put_shards(self, puts: list[tuple[NodeSpec, str, ShardSlot]],
                         stall_s: float) -> list[str | None]:
        self.groups.append(len(puts))
        errors: list[str | None] = []
        for node, sid, slot in puts:
            try:
                await self.put_shard(node, sid, slot, 1)
                errors.append(None)
            except Exception as exc:  # noqa: BLE001 - reported per put, as put_shards does
                errors.append(str(exc))
        return errors


async def test_a_one_segment_object_goes_to_put_shards_in_one_call(tmp_path: Path) -> None:
    cfg = sim_config(tmp_path, 1024)
    nodes = GroupNodes(list(cfg.nodes))
    async with sim_s3(tmp_path, cfg, nodes, BUCKET) as s3:
        await _round_trip(s3, "grouped", _body(1024 * 1024, 5))
        await _round_trip(s3, "streamed", _body(2 * 1024 * 1024 + 5, 6))
    assert nodes.groups == [6]  # the six shards in one call; a larger object streams
    assert [kind for kind, _ in nodes.bodies] == ["slot"] * 6 + ["stream"] * 6
