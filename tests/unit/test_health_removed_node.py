"""A node removed from the map while its probe is in flight, or answering a malformed health
document, never kills the probe loop (review9c: a KeyError ended the `health-probe` task for
good: no node came back up in any worker, and `stop()` raised)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storage.config import NodeSpec
from storage.health import UP, HealthTracker
from storage.shards.client import NodeError

NODES = [NodeSpec(id=f"n{i}", zone="az1", address=f"127.0.0.{i}:1") for i in (1, 2, 3)]


class Held:
    """Answers n1 and n2 at once; n3's probe waits until released, then fails or answers."""

    def __init__(self, fail: bool) -> None:
        self.entered = asyncio.Event()
        self.go = asyncio.Event()
        self.fail = fail

    async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> dict[str, Any]:
        if node.id == "n3":
            self.entered.set()
            await self.go.wait()
            if self.fail:
                raise NodeError(node.id, "ServerTimeoutError: timeout")
        return {"used_bytes": 1, "free_bytes": 2, "shards": 3, "started": 4.0}


@pytest.mark.parametrize("fail", [True, False], ids=["probe-fails", "probe-answers"])
async def test_a_node_removed_during_its_probe(fail: bool) -> None:
    client = Held(fail)
    h = HealthTracker(NODES, client)  # type: ignore[arg-type]
    for s in h.states.values():
        s.answered = s.probed = -1e9  # every node is due a probe
    probe = asyncio.ensure_future(h.probe_once())
    await client.entered.wait()
    h.set_nodes(NODES[:2], {"n1", "n2"})  # n3 retired meanwhile
    client.go.set()
    await probe  # no KeyError
    assert set(h.states) == {"n1", "n2"}
    assert all(s.state == UP and s.shards == 3 for s in h.states.values())


async def test_a_malformed_health_document_leaves_the_figures_and_the_loop() -> None:
    class Bad:
        async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> Any:
            return {"used_bytes": "lots"} if node.id == "n1" else ["not", "a", "dict"]

    h = HealthTracker(NODES, Bad())  # type: ignore[arg-type]
    for s in h.states.values():
        s.answered = s.probed = -1e9
    await h.probe_once()
    assert all(s.state == UP and s.used_bytes == 0 for s in h.states.values())


async def test_an_unexpected_error_in_a_round_is_logged_and_the_loop_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    class Broken:
        async def health(self, node: NodeSpec, timeout_s: float = 2.0) -> Any:
            nonlocal calls
            calls += 1
            raise RuntimeError("a bug")

    h = HealthTracker(NODES, Broken(), probe_interval_s=0.01)  # type: ignore[arg-type]
    h.start()
    try:
        for _ in range(6000):  # at most ~30 s: the old code never gets there
            if calls >= 2 * len(NODES) or h._task is None or h._task.done():
                break
            await asyncio.sleep(0.005)
        assert h._task is not None and not h._task.done()
        assert calls >= 2 * len(NODES)  # a second round ran: the first did not end the task
    finally:
        await h.stop()
    assert "health probe round failed" in caplog.text
