"""The busy lag bound of repair and rebalancing, changed on a running cluster: `tessera config
set repair.busy_lag_ms` reaches the repair worker, and `tessera status` shows it in force."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ops.admincli import CliError, admin_request
from tests.integration.cluster import LocalCluster


def _pacing_shows(cluster: LocalCluster, section: str, bound_ms: float) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        pacing = admin_request("GET", "/status", env=cluster.env)[section].get("pacing") or {}
        if pacing.get("lag_bound_ms") == bound_ms or time.monotonic() > deadline:
            return pacing
        time.sleep(0.25)  # the worker reads overrides and publishes its pacing every 2 s


@pytest.mark.parametrize("section", ["repair", "rebalance"])
def test_busy_lag_bound_is_settable_at_runtime_and_shown(cluster: LocalCluster,
                                                         section: str) -> None:
    name = f"{section}.busy_lag_ms"
    r = admin_request("PUT", f"/config/{name}", {"value": 60}, env=cluster.env)
    assert r["settings"][name] == {"value": 60, "configured": 25, "override": 60}
    for value in (-1, 10_001, "5", True, None):
        with pytest.raises(CliError, match="InvalidArgument"):
            admin_request("PUT", f"/config/{name}", {"value": value}, env=cluster.env)
    try:
        pacing = _pacing_shows(cluster, section, 60.0)
        assert pacing["lag_bound_ms"] == 60.0 and pacing["adaptive"], pacing
        assert pacing["busy_rate_floor"] == 4 * 2**20, pacing
    finally:
        r = admin_request("DELETE", f"/config/{name}", env=cluster.env)
    assert r["settings"][name] == {"value": 25, "configured": 25, "override": None}
    assert _pacing_shows(cluster, section, 25.0)["lag_bound_ms"] == 25.0
