"""A node reports what its shards take on disk (`disk_bytes`) beside its live shards
(`used_bytes`): a packed shard's DELETE writes a tombstone and the record stays in its pack
until compaction, so "used" alone understated the disk's use (review19i L3). The health
document and the node's Prometheus metrics carry both, the status table and the console's
node card show "on disk"."""

from __future__ import annotations

import json
from pathlib import Path

from ops.status import _on_disk, human_size
from tests.contract.node_harness import make_shard
from tests.unit.test_packed_node import BLOCK, PACK_MAX, Node, put


def _on_disk_now(data: Path) -> int:
    """The real size of the node's shard storage: its pack files and shard files."""
    return sum(p.stat().st_size for p in (data / "packs").glob("*.pack")) + sum(
        p.stat().st_size for p in (data / "shards").rglob("*") if p.is_file())


async def test_deleted_packed_shards_count_on_disk_until_compaction(tmp_path: Path) -> None:
    data = tmp_path / "data"
    node = Node(data, PACK_MAX)
    await node.start()
    try:
        bodies = []
        for _ in range(3):
            sid, _, _, body = make_shard(frames=2, block_size=BLOCK, last=None)
            assert (await put(node, body, sid))[0] == 201
            bodies.append((sid, body))
        big_sid, _, _, big = make_shard(frames=20, block_size=BLOCK, last=None)  # > 1 MiB:
        assert (await put(node, big, big_sid))[0] == 201  # a file
        for sid, _ in bodies[:2]:
            assert (await node.call("DELETE", f"/v1/shards/{sid}"))[0] in (200, 204)
        status, got = await node.call("GET", "/v1/health")
        assert status == 200
        doc = json.loads(got)
        assert doc["used_bytes"] == len(bodies[2][1]) + len(big)  # live shards only
        assert doc["disk_bytes"] == _on_disk_now(data)  # the deleted ones still take space
        assert doc["disk_bytes"] > doc["used_bytes"] + len(bodies[0][1]) + len(bodies[1][1])
        status, got = await node.call("GET", "/metrics")  # Prometheus: both, as in health
        assert status == 200
        gauges = _gauges(got.decode())
        assert gauges["tessera_node_disk_bytes"] == doc["disk_bytes"]
        assert gauges["tessera_node_used_bytes"] == doc["used_bytes"]
    finally:
        await node.stop()
    again = Node(data, PACK_MAX)  # a restart counts the same
    await again.start()
    try:
        usage = await again.store.usage()
        assert usage["disk_bytes"] == _on_disk_now(data)
    finally:
        await again.stop()


def _gauges(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text exposition, by name."""
    return {name: float(value) for name, value in
            (line.split(" ", 1) for line in text.splitlines()
             if line and not line.startswith("#") and "{" not in line)}


def test_status_shows_on_disk_and_falls_back_to_used() -> None:
    assert _on_disk({"used_bytes": 1, "disk_bytes": 5 << 20}) == human_size(5 << 20)
    assert _on_disk({"used_bytes": 3 << 20}) == human_size(3 << 20)  # an older gateway


async def test_a_reserve_given_up_shows_in_health_and_metrics(tmp_path: Path) -> None:
    """review20d L4: while the packs' reserve is given up every packed PUT is refused (507),
    yet free_bytes shows the space it gave back: the node says how much it holds now and
    when whole (the suite's nodes keep 256 KiB: TESSERA_PACKS_RESERVE_BYTES)."""
    node = Node(tmp_path / "data", None)
    await node.start()
    try:
        async def reserve() -> tuple[dict, dict[str, float]]:
            status, got = await node.call("GET", "/v1/health")
            assert status == 200
            status, text = await node.call("GET", "/metrics")
            assert status == 200
            return json.loads(got), _gauges(text.decode())

        doc, gauges = await reserve()
        assert doc["reserve_bytes"] == doc["reserve_size"] == 256 * 1024
        assert gauges["tessera_node_pack_reserve_bytes"] == 256 * 1024
        assert gauges["tessera_node_pack_reserve_size_bytes"] == 256 * 1024
        packs = node.store.packs
        assert packs is not None and packs.reserve.release(64 * 1024)  # as a full disk does
        doc, gauges = await reserve()
        assert doc["reserve_bytes"] == gauges["tessera_node_pack_reserve_bytes"] == packs.reserve.held
        assert 0 < doc["reserve_bytes"] < doc["reserve_size"]
    finally:
        await node.stop()
