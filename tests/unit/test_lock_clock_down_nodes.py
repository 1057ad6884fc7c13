"""review17b: the lock clock when most nodes do not answer. Callers queued on the reading
must not each probe every node again (a convoy: N waiting requests = N rounds of probes,
each as long as the probe timeout for a blackholed node)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from storage import lock_clock
from storage.config import NodeSpec
from storage.shards.client import NodeError
from storage.testing.simnodes import SimNodes
from tests.inproc import sim_config, sim_s3


class _Nodes:
    """Five of nine nodes do not answer (refused at once: the count, not the time, shows it)."""

    def __init__(self, specs: list[NodeSpec]) -> None:
        self.down = {s.id for s in specs[:5]}
        self.calls = 0

    async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(0)
        if node.id in self.down:
            raise NodeError(node.id, "down")
        return {"now": 1.0e9}


async def test_callers_waiting_on_a_failed_reading_do_not_each_probe_again() -> None:
    specs = [NodeSpec(id=f"n{i}", zone=f"z{i % 3}", address=f"127.0.0.1:{i + 1}")
             for i in range(9)]
    nodes = _Nodes(specs)
    clock = lock_clock.LockClock(nodes, lambda: specs)  # type: ignore[arg-type]
    got = await asyncio.gather(*(clock.now() for _ in range(20)), return_exceptions=True)
    assert all(isinstance(g, lock_clock.ClockUnverified) for g in got)
    assert nodes.calls <= 2 * len(specs), f"{nodes.calls} health probes for 20 callers"



async def test_a_delete_objects_with_most_nodes_down_probes_them_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DeleteObjects judges each key's lock (16 at a time): with most nodes down every key
    made its own round of probes (and, with a blackholed node, waited its timeout). Each key
    here has a retention this gateway's clock says has ended, so each needs the nodes."""
    cfg = sim_config(tmp_path, 4096)
    nodes = SimNodes(list(cfg.nodes))
    async with sim_s3(tmp_path, cfg, nodes, "plain") as s3:
        await asyncio.to_thread(s3.create_bucket, Bucket="locked",
                                ObjectLockEnabledForBucket=True)
        until = datetime.fromtimestamp(time.time() + 600, UTC)
        puts = await asyncio.gather(*(asyncio.to_thread(
            s3.put_object, Bucket="locked", Key=f"k{i}", Body=b"x", ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=until, ChecksumAlgorithm="CRC32") for i in range(32)))
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3600.0)  # ended, by this clock
        # the failed reading is held for the whole call (its 1 s default would make the
        # count depend on how fast a loaded machine runs 32 keys)
        monkeypatch.setattr(lock_clock, "FAILED_HOLD_S", 3600.0)
        for n in cfg.nodes[:5]:
            nodes.down.add(n.id)
        before = nodes.requests
        got = await asyncio.to_thread(
            s3.delete_objects, Bucket="locked", Delete={"Quiet": False, "Objects": [
                {"Key": f"k{i}", "VersionId": p["VersionId"]} for i, p in enumerate(puts)]})
        assert {e["Code"] for e in got.get("Errors", [])} == {"ServiceUnavailable"}
        probes = nodes.requests - before
        assert probes <= 2 * len(cfg.nodes), f"{probes} node requests for one DeleteObjects"


async def test_shredding_a_tenant_without_object_lock_needs_no_node_clock(
        tmp_path: Path) -> None:
    """A shred judges retentions only of versions in buckets with Object Lock; a tenant with
    none is shredded (metadata only) while most nodes are down, as before the lock clock."""
    from storage import keys_rotation as kr
    from storage.tenant_state import SHREDDED
    from tests.inproc import wired_cluster

    cfg = sim_config(tmp_path, 4096)
    nodes = SimNodes(list(cfg.nodes))
    async with wired_cluster(tmp_path, cfg, nodes) as cluster:
        await cluster.tenants.create_key("t")
        await cluster.buckets.create("t", "plain")
        # another tenant's Object Lock bucket: scanned (t may have written there under a
        # grant, mend22c), but no version of t's there has a retention to judge
        await cluster.tenants.create("w")
        await cluster.buckets.create("w", "locked", versioning="Enabled", config={
            "object_lock": {"enabled": True, "rule": {"mode": "COMPLIANCE", "days": 1}}})
        for n in cfg.nodes[:5]:
            nodes.down.add(n.id)
        await kr.schedule_shred(cluster.meta, cluster.tenants, "t", 0, "test",
                                cluster.objects.lock_clock.now)  # as the admin API
        assert (await cluster.tenants.get("t")).state == SHREDDED
