"""Node health as the gateway sees it: up, suspect, down, out.

Failures reported by requests mark a node suspect, then down; a background probe brings it
back. Reads and writes skip down nodes so they do not wait for a timeout on every request.
A node that answered a request since the previous probe round is up by that very answer:
the round skips it, unless its disk figures are `STATS_ROUNDS` rounds old (busy clusters
then send a probe per node every few seconds instead of every second).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from storage.config import NodeSpec
from storage.shards.client import NodeError
from storage.shards.transport import NodeTransport

UP, SUSPECT, DOWN, OUT = "up", "suspect", "down", "out"
RETURN_PROBES = 3  # extra probes of down nodes between two full probes (returns seen fast)
RETURN_PROBE_TIMEOUT_S = 0.5
STATS_ROUNDS = 5  # a node's used/free bytes and shard count are refreshed this often


@dataclass
class NodeState:
    state: str = UP
    failures: int = 0
    since: float = 0.0
    last_error: str = ""
    used_bytes: int = 0
    free_bytes: int = 0
    shards: int = 0
    answered: float = 0.0  # monotonic time of the last successful request (not a probe)
    probed: float = 0.0  # monotonic time of the last successful probe (disk figures)


class HealthTracker:
    def __init__(self, nodes: Sequence[NodeSpec], client: NodeTransport,
                 probe_interval_s: float = 1.0, out_after_s: float = 600.0) -> None:
        self.nodes = tuple(nodes)
        self._client = client
        self._interval = probe_interval_s
        self._out_after = out_after_s
        self.states = {n.id: NodeState(since=time.time()) for n in nodes}
        self._placeable: set[str] | None = None  # None: every node (no membership overlay)
        self._task: asyncio.Task[None] | None = None

    def is_usable(self, node_id: str) -> bool:
        s = self.states.get(node_id)
        return s is not None and s.state in (UP, SUSPECT)

    def usable(self) -> list[NodeSpec]:
        return [n for n in self.nodes if self.is_usable(n.id)]

    def placeable(self) -> list[NodeSpec]:
        """Usable nodes that may take new shards (membership state active, not draining)."""
        return [n for n in self.usable() if self._placeable is None or n.id in self._placeable]

    def set_nodes(self, nodes: Sequence[NodeSpec], placeable: set[str]) -> None:
        """Replace the cluster map (membership changes); new nodes start up until probed."""
        self.nodes = tuple(nodes)
        for n in nodes:
            self.states.setdefault(n.id, NodeState(since=time.time()))
        self._placeable = set(placeable)

    def report_failure(self, node_id: str, reason: str) -> None:
        s = self.states.get(node_id)
        if s is None:
            return
        s.failures += 1
        s.last_error = reason
        new = DOWN if s.failures >= 2 or "Connect" in reason or "refused" in reason else SUSPECT
        if s.state in (UP, SUSPECT) and new != s.state:
            s.state, s.since = new, time.time()

    def report_success(self, node_id: str, probe: bool = False) -> None:
        """A request to the node succeeded (`probe`: the health probe itself, which does
        not count as recent traffic that would let the next round skip the node)."""
        s = self.states.get(node_id)
        if s is None:
            return
        s.failures = 0
        if not probe:
            s.answered = time.monotonic()
        if s.state != UP:
            s.state, s.since = UP, time.time()

    def needs_probe(self, node_id: str, now: float) -> bool:
        """Whether a full round probes the node: not when it answered a request within the
        last interval and its disk figures are fresh enough."""
        s = self.states[node_id]
        return (s.state != UP or now - s.answered > self._interval
                or now - s.probed > STATS_ROUNDS * self._interval)

    async def probe_once(self, only_down: bool = False) -> None:
        """Probe every node that needs it (`needs_probe`; `only_down`: the nodes seen down
        or out, with a short timeout)."""
        async def one(n: NodeSpec) -> None:
            try:
                h = await (self._client.health(n, RETURN_PROBE_TIMEOUT_S) if only_down
                           else self._client.health(n))
            except NodeError as exc:
                self.report_failure(n.id, str(exc))
                s = self.states[n.id]
                if s.state == DOWN and time.time() - s.since > self._out_after:
                    s.state = OUT
                return
            self.report_success(n.id, probe=True)
            s = self.states[n.id]
            s.used_bytes = int(h.get("used_bytes", 0))
            s.free_bytes = int(h.get("free_bytes", 0))
            s.shards = int(h.get("shards", 0))
            s.probed = time.monotonic()

        now = time.monotonic()
        nodes = [n for n in self.nodes if self.states[n.id].state in (DOWN, OUT)] \
            if only_down else [n for n in self.nodes if self.needs_probe(n.id, now)]
        await asyncio.gather(*(one(n) for n in nodes))

    async def _run(self) -> None:
        """A full probe every interval; between two, the down nodes a few more times, so a
        node that comes back is used (and repair hears of it) within a fraction of it."""
        while True:
            await self.probe_once()
            for _ in range(RETURN_PROBES):
                await asyncio.sleep(self._interval / (RETURN_PROBES + 1))
                await self.probe_once(only_down=True)
            await asyncio.sleep(self._interval / (RETURN_PROBES + 1))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health-probe")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
