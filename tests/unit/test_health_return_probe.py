"""Down nodes are probed between full probes, so a node that returns is used (and repair
hears of it) within a fraction of the probe interval; up nodes are not probed then."""

from __future__ import annotations

from typing import Any

from storage.config import NodeSpec
from storage.health import DOWN, OUT, UP, HealthTracker
from storage.testing.simnodes import SimNodes

NODES = [NodeSpec(id=f"n{i}", zone=f"az{i}", address=f"127.0.{i}.1:1") for i in (1, 2, 3)]


class Counting(SimNodes):
    def __init__(self) -> None:
        super().__init__(list(NODES))
        self.probed: list[tuple[str, float]] = []

    async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]:
        self.probed.append((node.id, timeout_s))
        return await super().health(node, timeout_s)


async def test_return_probe_asks_only_down_and_out_nodes_and_brings_them_back() -> None:
    sim = Counting()
    h = HealthTracker(NODES, sim)
    h.states["n2"].state = DOWN
    h.states["n3"].state = OUT
    sim.down.add("n3")  # still unreachable
    await h.probe_once(only_down=True)
    assert sorted(n for n, _ in sim.probed) == ["n2", "n3"]
    assert all(t < 2.0 for _, t in sim.probed)  # a short timeout: a hung node stalls nothing
    assert h.states["n2"].state == UP  # it answered: back in use
    assert h.states["n3"].state == OUT
    sim.probed.clear()
    await h.probe_once()
    assert sorted(n for n, _ in sim.probed) == ["n1", "n2", "n3"]
