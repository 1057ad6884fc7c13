"""Parts of at least twice `large_segment_size` (4 MiB) are coded in segments of that size:
a 64 MiB object in 16 segments, not 64, so a quarter of the frames, GCM tags, crc32c checks
and shard writes per byte on the gateway and the nodes. The real gateway pipeline and wiring
over in-memory nodes, driven by boto3, at a scale of 1/16 (64 KiB and 256 KiB segments) to
stay quick; the segment size is read from the shard files.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from storage.config import ConfigError, config_from_mapping
from storage.shards.format import HEADER_BYTES, ShardHeader
from storage.testing.simnodes import SimNodes
from tests.inproc import sim_config, sim_s3

BUCKET = "large"
MiB = 1024 * 1024
SEG, LARGE = 64 * 1024, 256 * 1024


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Any, SimNodes]]:
    sim = sim_config(tmp_path, 1024)
    cfg = replace(sim, segment_size=SEG, large_segment_size=LARGE)
    nodes = SimNodes(list(cfg.nodes))
    async with sim_s3(tmp_path, cfg, nodes, BUCKET) as s3:
        yield s3, nodes


def _segment_sizes(nodes: SimNodes) -> list[int]:
    """The segment size in the header of every shard file, in the order written."""
    return [ShardHeader.unpack(bytes(f[:HEADER_BYTES])).segment_size
            for files in nodes.files.values() for f in files.values()]


async def test_a_large_object_is_coded_in_large_segments_and_reads_back(
        gateway: tuple[Any, SimNodes]) -> None:
    s3, nodes = gateway
    body = hashlib.shake_256(b"large").digest(2 * LARGE + 12345)  # three large segments
    put = await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key="big", Body=body)
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert _segment_sizes(nodes) == [LARGE] * 6
    got = await asyncio.to_thread(lambda: s3.get_object(Bucket=BUCKET, Key="big")["Body"].read())
    assert got == body
    lo, hi = LARGE - 100, 2 * LARGE + 99  # across both segment boundaries
    part = await asyncio.to_thread(lambda: s3.get_object(
        Bucket=BUCKET, Key="big", Range=f"bytes={lo}-{hi}")["Body"].read())
    assert part == body[lo:hi + 1]


async def test_an_object_under_twice_the_large_size_keeps_the_segment_size(
        gateway: tuple[Any, SimNodes]) -> None:
    s3, nodes = gateway
    body = hashlib.shake_256(b"smaller").digest(2 * LARGE - 1)
    await asyncio.to_thread(s3.put_object, Bucket=BUCKET, Key="smaller", Body=body)
    assert _segment_sizes(nodes) == [SEG] * 6
    got = await asyncio.to_thread(
        lambda: s3.get_object(Bucket=BUCKET, Key="smaller")["Body"].read())
    assert got == body


def test_the_large_segment_size_is_configured_and_can_be_off(tmp_path: Path) -> None:
    def cfg(cluster: dict[str, int]) -> Any:
        nodes = [{"id": f"n{i}", "zone": f"az{i}", "address": f"127.0.0.{i}:1"}
                 for i in (1, 2, 3)]
        return config_from_mapping({"data_dir": str(tmp_path), "cluster": cluster,
                                    "profiles": {"standard": {"k": 2, "m": 1}},
                                    "nodes": nodes}, tmp_path)

    assert cfg({}).segment_for(64 * MiB) == 4 * MiB
    assert cfg({}).segment_for(None) == MiB  # unknown length (chunked): as before
    assert cfg({"large_segment_size": 0}).segment_for(64 * MiB) == MiB
    assert cfg({"large_segment_size": 2 * MiB}).segment_for(4 * MiB) == 2 * MiB
    with pytest.raises(ConfigError):
        cfg({"segment_size": 2 * MiB, "large_segment_size": MiB})
