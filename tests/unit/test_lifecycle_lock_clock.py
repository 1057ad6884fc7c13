"""review17h: lifecycle's removal of a locked noncurrent version judges the retention by the
lock clock (`object_lock.judged` in `LifecycleEngine._remove`), not this process's clock: a
gateway an hour fast must not expire a version whose COMPLIANCE retention still runs by the
nodes' (true) clocks. No other test reached this path with a fast clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from storage import lock_clock
from storage.testing.simnodes import SimNodes
from tests.inproc import in_thread, served_s3, sim_config, wired_cluster
from tests.unit.test_lock_clock import HOUR, put_locked


async def test_a_fast_gateway_clock_does_not_let_lifecycle_expire_a_locked_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = sim_config(tmp_path, 4096)
    nodes = SimNodes(list(cfg.nodes))
    monkeypatch.setattr(lock_clock, "REFRESH_S", 0.0)  # the nodes' clocks read at each use
    async with wired_cluster(tmp_path, cfg, nodes) as cluster:
        cred = await cluster.tenants.create_key("t")
        async with served_s3(cluster, cfg, cred.access_key, cred.secret_key) as s3:
            call = in_thread(s3)
            old = (await put_locked(call, b"kept", "COMPLIANCE", time.time() + 600))["VersionId"]
            await call("put_object", Bucket="locked", Key="k", Body=b"new")
            await call("put_bucket_lifecycle_configuration", Bucket="locked",
                       LifecycleConfiguration={"Rules": [{
                           "ID": "nc", "Status": "Enabled", "Filter": {"Prefix": ""},
                           "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]})
            real = time.time
            monkeypatch.setattr(time, "time", lambda: real() + HOUR)  # this host: an hour fast
            for n in cfg.nodes:
                nodes.clock_offset[n.id] = -HOUR  # the nodes: the true time
            rep = await cluster.lifecycle.run_once(now=real() + 5 * 86400)
            versions = await call("list_object_versions", Bucket="locked")
            assert old in {v["VersionId"] for v in versions.get("Versions", [])}, (
                f"lifecycle expired a version under COMPLIANCE retention ({rep})")
