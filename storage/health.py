"""Node health as the gateway sees it: up, suspect, down, out.

Failures reported by requests mark a node suspect, then down; a background probe brings it
back. Reads and writes skip down nodes so they do not wait for a timeout on every request.
A node that answered a request since the previous probe round is up by that very answer:
the round skips it, unless its disk figures are `STATS_ROUNDS` rounds old (busy clusters
then send a probe per node every few seconds instead of every second).

The worker processes of one gateway share their view (`share`, `storage/sharedhealth.py`):
every state change is published there and adopted by every tracker before it decides, so
a node found dead by one worker is avoided by all, and only one of them runs the probe loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from storage.config import NodeSpec
from storage.shards.client import NodeError
from storage.shards.transport import NodeTransport
from storage.sharedhealth import SharedHealth

UP, SUSPECT, DOWN, OUT = "up", "suspect", "down", "out"
RETURN_PROBES = 3  # extra probes of down nodes between two full probes (returns seen fast)
RETURN_PROBE_TIMEOUT_S = 0.5
DISK_PROBE_TIMEOUT_S = 2.0  # a refused write's look at the nodes' disks (`free_bytes`)
STATS_ROUNDS = 5  # a node's used/free bytes and shard count are refreshed this often

log = logging.getLogger("tessera.health")


@dataclass
class NodeState:
    state: str = UP
    failures: int = 0
    # monotonic time of the last state change: the down grace and the out timer never
    # follow a step of the wall clock (an NTP step back delayed the rebuild of a dead
    # node's shards by the step; one forward marked a node down for a moment out)
    since: float = 0.0
    last_error: str = ""
    used_bytes: int = 0  # the node's live shards
    disk_bytes: int = 0  # what its shards take on disk (packs: until compaction reclaims)
    free_bytes: int = 0
    shards: int = 0
    started: float = 0.0  # the node process's start it reports (a restart changes it)
    answered: float = 0.0  # monotonic time of the last successful request (not a probe)
    probed: float = 0.0  # monotonic time of the last successful probe (disk figures)

    def for_s(self) -> float:
        """Seconds in the current state (monotonic: the host's clock steps do not count)."""
        return time.monotonic() - self.since


class HealthTracker:
    def __init__(self, nodes: Sequence[NodeSpec], client: NodeTransport,
                 probe_interval_s: float = 1.0, out_after_s: float = 600.0) -> None:
        self.nodes = tuple(nodes)
        self._client = client
        self._interval = probe_interval_s
        self._out_after = out_after_s
        self._states = {n.id: NodeState(since=time.monotonic()) for n in nodes}
        self._placeable: set[str] | None = None  # None: every node (no membership overlay)
        # the revision of the membership epoch record (`member_epoch_key`) in the snapshot
        # the map was applied from (0: none yet; -1: the map is not from the store)
        self.member_epoch = -1
        self._task: asyncio.Task[None] | None = None
        self._shared: SharedHealth | None = None
        self._seen = -1  # the shared page's sequence this tracker last adopted

    @property
    def states(self) -> dict[str, NodeState]:
        """Every node's state, as the shared page (if any) says now."""
        self._sync()
        return self._states

    def share(self, shared: SharedHealth) -> None:
        """Publish this tracker's state changes in `shared` and adopt the other processes'
        (the gateway's workers): a node marked down by one is avoided by all at once."""
        self._shared = shared
        self._seen = -1
        with self._locked():
            self._sync()
            for nid, s in self._states.items():  # what this process already knows
                if s.state != UP:
                    self._publish(nid, s)

    def _sync(self) -> None:
        """Adopt the shared page's states if any process changed one since the last look."""
        sh = self._shared
        if sh is None or sh.sequence() == self._seen:
            return
        got = sh.read()
        if got is None:
            return
        self._seen, entries = got
        for nid, (state, failures, since) in entries.items():
            s = self._states.get(nid)
            if s is not None:
                s.state, s.failures, s.since = state, failures, since

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Around a read-modify-write of node states: the shared page's lock, if shared."""
        if self._shared is None:
            yield
            return
        with self._shared.locked():
            self._sync()
            yield

    def _publish(self, node_id: str, s: NodeState) -> None:
        """Write one node's state to the shared page (inside `_locked`)."""
        if self._shared is not None:
            self._seen = self._shared.write(node_id, s.state, s.failures, s.since)

    def is_usable(self, node_id: str) -> bool:
        self._sync()
        s = self._states.get(node_id)
        return s is not None and s.state in (UP, SUSPECT)

    def usable(self) -> list[NodeSpec]:
        self._sync()  # once for the whole list, not once per node through is_usable
        st = self._states
        return [n for n in self.nodes if n.id in st and st[n.id].state in (UP, SUSPECT)]

    def placeable(self) -> list[NodeSpec]:
        """Usable nodes that may take new shards (membership state active, not draining)."""
        return [n for n in self.usable() if self._placeable is None or n.id in self._placeable]

    def members(self, role: str) -> list[NodeSpec]:
        """The nodes of `role` the cluster map lets take new shards (membership active,
        not draining), whatever their health."""
        return [n for n in self.nodes if n.role == role
                and (self._placeable is None or n.id in self._placeable)]

    async def free_bytes(self, nodes: Sequence[NodeSpec]) -> dict[str, int]:
        """Node id -> the free bytes on its data disk, as each of `nodes` says now (its
        health probe, at most `DISK_PROBE_TIMEOUT_S`, all at once; a node that does not
        answer is left out), kept as its disk figure. Its health state is left as it is:
        a refused write asks this to name its cause, not to judge the nodes."""
        async def one(n: NodeSpec) -> tuple[str, int] | None:
            try:
                h = await self._client.health(n, DISK_PROBE_TIMEOUT_S)
                free = int(h["free_bytes"])
            except (NodeError, KeyError, TypeError, ValueError):
                return None
            s = self._states.get(n.id)
            if s is not None:
                s.free_bytes = free
            return n.id, free

        return dict(a for a in await asyncio.gather(*(one(n) for n in nodes)) if a)

    def is_member(self, node_id: str) -> bool:
        """Whether `node_id` is in the cluster map (not removed, as of the map applied)."""
        return any(n.id == node_id for n in self.nodes)

    def set_nodes(self, nodes: Sequence[NodeSpec], placeable: set[str],
                  epoch: int = -1) -> None:
        """Replace the cluster map (membership changes); new nodes start up until probed.
        A removed node's state goes with it: it is no longer probed, so a state kept would
        stay down forever (the repair sweep would run unpaced for good, the status would
        count it)."""
        self.nodes = tuple(nodes)
        ids = {n.id for n in nodes}
        for nid in [nid for nid in self._states if nid not in ids]:
            del self._states[nid]
        for n in nodes:
            self._states.setdefault(n.id, NodeState(since=time.monotonic()))
        self._placeable = set(placeable)
        self.member_epoch = epoch  # (-1, a map not read from the store: commits re-read it)
        self._seen = -1  # adopt what the shared page says of the new nodes too

    def report_failure(self, node_id: str, reason: str) -> None:
        s = self._states.get(node_id)
        if s is None:
            return
        with self._locked():
            s.failures += 1
            s.last_error = reason
            new = DOWN if s.failures >= 2 or "Connect" in reason or "refused" in reason \
                else SUSPECT
            if s.state in (UP, SUSPECT):
                if new != s.state:
                    s.state, s.since = new, time.monotonic()
                self._publish(node_id, s)  # the failure count too: two workers' add up

    def report_success(self, node_id: str, probe: bool = False) -> None:
        """A request to the node succeeded (`probe`: the health probe itself, which does
        not count as recent traffic that would let the next round skip the node)."""
        s = self._states.get(node_id)
        if s is None:
            return
        if not probe:
            s.answered = time.monotonic()
        self._sync()
        if s.state == UP and s.failures == 0:
            return  # the common case: nothing changes, nothing to publish
        with self._locked():
            s.failures = 0
            if s.state != UP:
                s.state, s.since = UP, time.monotonic()
            self._publish(node_id, s)

    async def confirm(self, node_ids: Iterable[str]) -> None:
        """Probe now, with a short timeout, those of `node_ids` that a request just failed
        but that are still in use (suspect: a keep-alive connection the node dropped, or a timeout, does
        not prove a node dead). A write that is about to fail its quorum calls this before
        answering, so the client's retry, through any gateway worker, avoids a dead node."""
        ids = set(node_ids)
        suspects = [n for n in self.nodes
                    if n.id in ids and self.states[n.id].state == SUSPECT]

        async def one(n: NodeSpec) -> None:
            try:
                await self._client.health(n, RETURN_PROBE_TIMEOUT_S)
            except NodeError as exc:
                self.report_failure(n.id, str(exc))  # the second failure: down
            else:
                self.report_success(n.id, probe=True)

        await asyncio.gather(*(one(n) for n in suspects))

    def needs_probe(self, node_id: str, now: float) -> bool:
        """Whether a full round probes the node: not when it answered a request within the
        last interval and its disk figures are fresh enough."""
        s = self._states[node_id]
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
                s = self._states.get(n.id)  # (none: removed from the map meanwhile)
                if s is not None and s.state == DOWN and s.for_s() > self._out_after:
                    with self._locked():
                        if s.state == DOWN:
                            s.state = OUT
                            self._publish(n.id, s)
                return
            s = self._states.get(n.id)
            if s is None:
                return  # removed from the map while its probe was in flight
            self.report_success(n.id, probe=True)
            try:
                used, free = int(h.get("used_bytes", 0)), int(h.get("free_bytes", 0))
                shards, started = int(h.get("shards", 0)), float(h.get("started", 0.0))
                disk = int(h.get("disk_bytes", used))  # a node before it: files only
            except (AttributeError, TypeError, ValueError):
                log.warning("node %s answered a malformed health document", n.id)
                return
            s.used_bytes, s.free_bytes, s.shards, s.started = used, free, shards, started
            s.disk_bytes = disk
            s.probed = time.monotonic()

        self._sync()
        now = time.monotonic()
        nodes = [n for n in self.nodes if self._states[n.id].state in (DOWN, OUT)] \
            if only_down else [n for n in self.nodes if self.needs_probe(n.id, now)]
        await asyncio.gather(*(one(n) for n in nodes))

    async def _run(self) -> None:
        """A full probe every interval; between two, the down nodes a few more times, so a
        node that comes back is used (and repair hears of it) within a fraction of it."""
        while True:
            await self._round()
            for _ in range(RETURN_PROBES):
                await asyncio.sleep(self._interval / (RETURN_PROBES + 1))
                await self._round(only_down=True)
            await asyncio.sleep(self._interval / (RETURN_PROBES + 1))

    async def _round(self, only_down: bool = False) -> None:
        """One probe round; an unexpected error is logged and the loop goes on (a dead
        probe task would leave every node's state frozen for the process's life)."""
        try:
            await self.probe_once(only_down)
        except Exception:  # noqa: BLE001 - logged; the next round runs as usual
            log.exception("health probe round failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health-probe")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
