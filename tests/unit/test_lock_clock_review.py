"""review17b: the lock clock when most nodes do not answer. Callers queued on the reading
must not each probe every node again (a convoy: N waiting requests = N rounds of probes,
each as long as the probe timeout for a blackholed node)."""

from __future__ import annotations

import asyncio
from typing import Any

from storage import lock_clock
from storage.config import NodeSpec
from storage.shards.client import NodeError


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

