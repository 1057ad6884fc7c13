"""Object Lock retention judged by a clock never ahead of the storage nodes' (storage.
lock_clock): a gateway whose clock runs an hour fast deleted a version still locked by the
nodes' (true) clocks; now it is refused until most nodes' clocks say the retention ended.

The gateway and the S3 client run in this process; its `time.time` is shifted an hour ahead
(as a gateway host's clock can be) while the simulated nodes' clocks are shifted back by as
much, so they tell the true time."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from storage import lock_clock
from storage.testing.simnodes import SimNodes
from tests.inproc import in_thread, sim_config, sim_s3

HOUR = 3600.0


async def put_locked(call: Any, body: bytes, mode: str, until: float) -> dict[str, Any]:
    """Bucket "locked" (Object Lock on) and key "k" in it retained in `mode` until `until`
    (epoch seconds); the PUT's answer."""
    await call("create_bucket", Bucket="locked", ObjectLockEnabledForBucket=True)
    return await call("put_object", Bucket="locked", Key="k", Body=body, ObjectLockMode=mode,
                      ChecksumAlgorithm="CRC32",
                      ObjectLockRetainUntilDate=datetime.fromtimestamp(until, UTC))


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


async def test_a_fast_gateway_clock_does_not_end_a_retention_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = sim_config(tmp_path, 4096)
    nodes = SimNodes(list(cfg.nodes))
    monkeypatch.setattr(lock_clock, "REFRESH_S", 0.0)  # the nodes' clocks read at each use
    async with sim_s3(tmp_path, cfg, nodes, "plain") as s3:
        call = in_thread(s3)
        put = await put_locked(call, b"kept", "COMPLIANCE", time.time() + 600)  # ten minutes
        version = put["VersionId"]

        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + HOUR)  # this host: an hour fast
        for n in cfg.nodes:
            nodes.clock_offset[n.id] = -HOUR  # the nodes: the true time

        with pytest.raises(ClientError) as refused:
            await call("delete_object", Bucket="locked", Key="k", VersionId=version)
        assert _code(refused) == "AccessDenied"  # the old code deleted it (its own clock)
        with pytest.raises(ClientError) as refused:  # nor shortened: still COMPLIANCE
            await call("put_object_retention", Bucket="locked", Key="k", VersionId=version,
                       Retention={"Mode": "GOVERNANCE",
                                  "RetainUntilDate": datetime.fromtimestamp(real() + HOUR
                                                                            + 60, UTC)})
        assert _code(refused) == "AccessDenied"
        got = await call("get_object", Bucket="locked", Key="k", VersionId=version)
        assert await asyncio.to_thread(got["Body"].read) == b"kept"

        for n in cfg.nodes[:4]:  # four of nine nodes say it ended: not most of them
            nodes.clock_offset[n.id] = 0.0
        with pytest.raises(ClientError) as refused:
            await call("delete_object", Bucket="locked", Key="k", VersionId=version)
        assert _code(refused) == "AccessDenied"

        nodes.clock_offset[cfg.nodes[4].id] = 0.0  # five of nine: the retention has ended
        await call("delete_object", Bucket="locked", Key="k", VersionId=version)


async def test_no_time_from_most_nodes_refuses_judging_a_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without most nodes' clocks the time is not vouched for: 503 for a retention this
    gateway's clock says has ended, never the gateway's own clock alone. A delete that needs
    no such judgement (a delete marker, an unlocked version) is not refused."""
    cfg = sim_config(tmp_path, 4096)
    nodes = SimNodes(list(cfg.nodes))
    monkeypatch.setattr(lock_clock, "FAILED_HOLD_S", 0.0)  # read again as the nodes return
    async with sim_s3(tmp_path, cfg, nodes, "plain") as s3:
        call = in_thread(s3)
        put = await put_locked(call, b"x", "COMPLIANCE", time.time() + 600)
        plain = await call("put_object", Bucket="locked", Key="plain", Body=b"x")
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + HOUR)  # ended, by this clock
        for n in cfg.nodes[:5]:
            nodes.down.add(n.id)
        with pytest.raises(ClientError) as refused:
            await call("delete_object", Bucket="locked", Key="k", VersionId=put["VersionId"])
        assert _code(refused) == "ServiceUnavailable"
        # a delete marker removes no version and judges no lock (review17b): not refused
        await call("delete_object", Bucket="locked", Key="k")
        # nor an unlocked version (mend17c: no reading at all)
        await call("delete_object", Bucket="locked", Key="plain", VersionId=plain["VersionId"])
        for n in cfg.nodes[:5]:
            nodes.down.discard(n.id)
        await call("delete_object", Bucket="locked", Key="k", VersionId=put["VersionId"])


async def test_a_fast_gateway_clock_does_not_shred_a_tenant_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shred scheduled past the end of a COMPLIANCE retention, run by the shred worker of
    a gateway whose clock is an hour fast before the retention ended: refused and put off
    (the old worker judged the retention by its own clock and destroyed the tenant's keys)."""
    from storage import keys_rotation as kr
    from storage.tenant_state import SHREDDED
    from tests.inproc import served_s3, wired_cluster

    cfg = sim_config(tmp_path, 4096)
    nodes = SimNodes(list(cfg.nodes))
    monkeypatch.setattr(lock_clock, "REFRESH_S", 0.0)
    async with wired_cluster(tmp_path, cfg, nodes) as cluster:
        cred = await cluster.tenants.create_key("t")
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            await put_locked(in_thread(s3), b"kept", "COMPLIANCE", time.time() + 600)
        await kr.schedule_shred(cluster.meta, cluster.tenants, "t", 700, "test",
                                cluster.objects.lock_clock.now)
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + HOUR)  # due, by this clock
        for n in cfg.nodes:
            nodes.clock_offset[n.id] = -HOUR
        shred = next(w for w in cluster.workers() if w.name == "shred")
        await shred.step()
        assert (await cluster.tenants.get("t")).state != SHREDDED
        assert await kr.pending_shred(cluster.meta, "t") is not None  # put off, not dropped
