"""mend17c: the lock clock reads the nodes only when a judgement needs them, does not wait
for a slow node once a majority answered, and a default retention counts from a time never
earlier than the nodes' (a slow gateway clock ended default locks early)."""

from __future__ import annotations

import asyncio
import inspect
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from storage import keys_rotation as kr
from storage import lock_clock
from storage.config import NodeSpec
from storage.testing.simnodes import SimNodes
from storage.workers.keys import ShredScheduler
from tests.inproc import in_thread, sim_config, sim_s3
from tests.unit.test_lock_clock import put_locked

HOUR = 3600.0
SPECS = [NodeSpec(id=f"n{i}", zone=f"z{i % 3}", address=f"127.0.0.1:{i + 1}") for i in range(9)]


class _Nodes:
    """Nodes 0-3 tell a clock an hour fast at once, node 4 the true time, 5-8 never answer
    (blackholed: their requests wait until cancelled)."""

    def __init__(self) -> None:
        self.cancelled = 0

    async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]:
        i = int(node.id[1:])
        if i < 4:
            return {"now": time.time() + HOUR}
        if i == 4:
            await asyncio.sleep(0)  # after the fast ones
            return {"now": time.time()}
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")


async def test_a_reading_does_not_wait_for_blackholed_nodes_nor_follow_a_fast_minority(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Five of nine answer (four of them an hour fast), four hang. The old reading waited
    the full per-node timeout for the hanging ones (2 s a reading: here made an hour, so the
    old code does not answer at all). The answer may not follow the four fast clocks: a
    majority of ALL nodes must have told a time at or past it."""
    monkeypatch.setattr(lock_clock, "PROBE_TIMEOUT_S", HOUR)
    nodes = _Nodes()
    clock = lock_clock.LockClock(nodes, lambda: SPECS)  # type: ignore[arg-type]
    before = time.time()
    got = await asyncio.wait_for(clock.now(), 30)
    assert before <= got <= time.time()  # the true time (node 4), not an hour fast
    assert nodes.cancelled == 4  # the hanging probes were stopped, not left behind
    assert await asyncio.wait_for(clock.floor(), 30) <= time.time() + 60  # not the fast ones


async def test_judgements_the_gateway_clock_settles_read_no_node_clock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a bucket with Object Lock: deleting an unlocked version, deleting (refused) a version
    whose retention is still ahead by this gateway's clock, and lengthening a retention give
    the same answer by the lock clock (never ahead of this one), so they ask no node its time
    (the old code read every node for each, stalling 2 s on a blackholed one every 30 s)."""
    cfg = sim_config(tmp_path, 4096)
    nodes = SimNodes(list(cfg.nodes))
    asked: list[str] = []
    real_health = nodes.health

    async def health(node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]:
        asked.append(node.id)
        return await real_health(node, timeout_s)

    monkeypatch.setattr(nodes, "health", health)
    monkeypatch.setattr(lock_clock, "REFRESH_S", 0.0)  # any reading would ask the nodes
    async with sim_s3(tmp_path, cfg, nodes, "plain") as s3:
        call = in_thread(s3)
        until = time.time() + 600
        put = await put_locked(call, b"kept", "GOVERNANCE", until)
        plain = await call("put_object", Bucket="locked", Key="plain", Body=b"x")
        asked.clear()
        await call("delete_object", Bucket="locked", Key="plain", VersionId=plain["VersionId"])
        with pytest.raises(Exception) as refused:
            await call("delete_object", Bucket="locked", Key="k", VersionId=put["VersionId"])
        assert "AccessDenied" in str(refused.value)
        await call("put_object_retention", Bucket="locked", Key="k", VersionId=put["VersionId"],
                   Retention={"Mode": "GOVERNANCE",
                              "RetainUntilDate": datetime.fromtimestamp(until + 600, UTC)})
        await call("delete_object", Bucket="locked", Key="k")  # a marker
        assert asked == [], f"{len(asked)} node clock reads for judgements needing none"


async def test_a_slow_gateway_clock_does_not_end_a_default_retention_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bucket's default retention of one day, a gateway whose clock is an hour slow: the
    retain-until counts from the nodes' (true) time, not the gateway's (old code: an hour
    early, so the version could be deleted an hour before its day was up)."""
    cfg = sim_config(tmp_path, 4096)
    nodes = SimNodes(list(cfg.nodes))
    real = time.time
    async with sim_s3(tmp_path, cfg, nodes, "plain") as s3:
        call = in_thread(s3)
        await call("create_bucket", Bucket="locked", ObjectLockEnabledForBucket=True)
        await call("put_object_lock_configuration", Bucket="locked", ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
        monkeypatch.setattr(time, "time", lambda: real() - HOUR)  # this host: an hour slow
        for n in cfg.nodes:
            nodes.clock_offset[n.id] = HOUR  # the nodes: the true time
        before = real()
        for key, body in (("small", b"x"), ("striped", b"y" * 100_000)):
            put = await call("put_object", Bucket="locked", Key=key, Body=body,
                             ChecksumAlgorithm="CRC32")
            got = await call("get_object_retention", Bucket="locked", Key=key,
                             VersionId=put["VersionId"])
            until = got["Retention"]["RetainUntilDate"].timestamp()
            assert until >= before + 86400 - 1, (
                f"{key}: a one-day default retention ends {before + 86400 - until:.0f} s early")


def test_the_shred_functions_take_the_lock_clock_explicitly() -> None:
    """One way to judge a retention: no shred entry point falls back to this process's own
    clock when a caller forgets the lock clock (they defaulted to it)."""
    for fn in (kr.shred_now, kr.schedule_shred, ShredScheduler.__init__):
        param = inspect.signature(fn).parameters["lock_now"]
        assert param.default is inspect.Parameter.empty, fn.__qualname__
