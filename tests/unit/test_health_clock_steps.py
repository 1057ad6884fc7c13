"""A step of the host's wall clock (NTP, an operator) never moves a node's down grace.

Repair counts a down node's shards as lost once it has been down `down_grace_s`, and the
health tracker marks a node out once down `out_after_s`. Both were measured on the wall
clock: a step back by D kept a dead node's shards "unknown" D longer (the stripes stayed
short of redundancy with nothing rebuilding them), a step forward made a node that had
been down for a second lost at once (a mass rebuild). Now they are measured on the
monotonic clock. The two clocks are replaced here by a controlled pair.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from storage.config import NodeSpec, RepairSettings
from storage.health import DOWN, OUT, HealthTracker
from storage.shards.client import NodeError
from storage.workers.repair_assess import RepairAssessor


class Clocks:
    """A wall clock and a monotonic clock the test moves on its own."""

    def __init__(self) -> None:
        self.wall, self.mono = 1.8e9, 5000.0

    def install(self, mp: pytest.MonkeyPatch) -> None:
        mp.setattr(time, "time", lambda: self.wall)
        mp.setattr(time, "monotonic", lambda: self.mono)


class Assessor(RepairAssessor):
    def __init__(self, health: HealthTracker, grace_s: float) -> None:
        self._health = health
        self.settings = RepairSettings(down_grace_s=grace_s)


class Unreachable:
    """A node client whose every probe fails (the node is dead)."""

    async def health(self, node: NodeSpec, timeout: float | None = None) -> dict:
        raise NodeError(node.id, "Connection refused")


def down_node(clocks: Clocks, mp: pytest.MonkeyPatch) -> HealthTracker:
    clocks.install(mp)
    health = HealthTracker([NodeSpec(id="n1", zone="az1", address="127.0.0.1:1")],
                           Unreachable(), out_after_s=600)  # type: ignore[arg-type]
    health.report_failure("n1", "Connection refused")
    assert health.states["n1"].state == DOWN
    return health


def test_a_step_back_does_not_extend_the_down_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = Clocks()
    health = down_node(clocks, monkeypatch)
    repair = Assessor(health, grace_s=300)
    clocks.mono += 400  # down for 400 s, past the grace...
    clocks.wall -= 3600  # ...while the wall clock was stepped back an hour
    assert repair._lost_node("n1") is True  # was None: "unknown" for another hour


def test_a_step_forward_does_not_end_the_down_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = Clocks()
    health = down_node(clocks, monkeypatch)
    repair = Assessor(health, grace_s=300)
    clocks.mono += 1  # down for a second...
    clocks.wall += 7200  # ...and the wall clock stepped two hours forward
    assert repair._lost_node("n1") is None  # was True: its shards rebuilt at once
    clocks.mono += 300
    assert repair._lost_node("n1") is True


def test_a_step_forward_does_not_mark_a_node_out(monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = Clocks()
    health = down_node(clocks, monkeypatch)
    clocks.mono += 1
    clocks.wall += 7200
    asyncio.run(health.probe_once())
    assert health.states["n1"].state == DOWN  # was OUT after a second down
    clocks.mono += 600
    asyncio.run(health.probe_once())
    assert health.states["n1"].state == OUT
