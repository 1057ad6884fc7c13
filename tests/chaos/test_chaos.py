"""A bounded chaos run on real processes: faults while a workload runs, then no loss."""

from __future__ import annotations

import json
import subprocess
import sys

from gateway.chaos import schedule

NODES = [f"n{i}" for i in range(1, 10)]
ZONES = ["az1", "az2", "az3"]


def test_same_seed_same_schedule() -> None:
    assert schedule(26, 60, NODES, ZONES) == schedule(26, 60, NODES, ZONES)
    assert schedule(26, 60, NODES, ZONES) != schedule(27, 60, NODES, ZONES)


def test_bounded_chaos_run_loses_nothing() -> None:
    # seed 26 over 20 s: gateway killed mid-upload (whole cluster restarted), a zone down
    # and back, a node killed and restarted; then heal, repair and verify.
    p = subprocess.run([sys.executable, "-m", "gateway.cli", "chaos", "--duration", "20",
                        "--seed", "26", "--repair-timeout", "60"],
                       capture_output=True, text=True, timeout=110)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result == {"lost": 0, "wrong": 0, "redundant": True}
    assert "faults kill_gateway" in p.stdout and "faults zone_down" in p.stdout
