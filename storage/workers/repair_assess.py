"""Repair's assessment of one stripe: which shards are healthy, missing, or unknown.

Each shard is judged by its node's health (out, or down past a grace: lost; down within
the grace: unknown) or by a stat on its node; shards named liars count as missing, and
healthy shards beyond m in one zone are moved while k others stay healthy. `at_risk` picks
the stripes repaired first and at full rate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from storage.config import NodeSpec, RepairSettings
from storage.health import DOWN, OUT, HealthTracker
from storage.pipeline import segment_count
from storage.records import PartLayout
from storage.shards.client import NodeError
from storage.shards.ids import shard_id
from storage.shards.transport import NodeTransport


@dataclass
class Assessment:
    healthy: dict[int, str]  # index -> node holding a good shard
    missing: list[int]  # indexes to rebuild
    unknown: dict[int, str]  # index -> node down within its grace (may come back)
    lying: dict[int, str] = field(default_factory=dict)  # named liars (in `missing` too)
    # in `missing` too: gone from (or damaged on) a node that is up, with nothing to
    # explain it (no node down or out): a silent loss, which makes the sweep hurry
    absent: list[int] = field(default_factory=list)


class RepairAssessor:
    """The repair worker's assessment half (a base of `RepairWorker`)."""

    settings: RepairSettings
    _health: HealthTracker
    _client: NodeTransport

    @property
    def _by_id(self) -> dict[str, NodeSpec]:
        return {n.id: n for n in self._health.nodes}  # the live cluster map (membership)

    def _lost_node(self, nid: str) -> bool | None:
        """True: treat its shards as lost; None: unknown (down within grace); False: usable."""
        s = self._health.states.get(nid)
        if s is None or s.state == OUT:
            return True
        if s.state == DOWN:
            return True if s.for_s() > self.settings.down_grace_s else None
        return False

    async def assess(self, part: PartLayout,
                     lying: Mapping[str, str] | None = None) -> Assessment:
        """Check every shard of a stripe: stat it on its node, or judge by node health.

        `lying` (index -> node, from the repair entry) names shards a reader or the deep
        scrub found lying: missing while the manifest still names that node, whatever
        their stat says (their checksums are valid).
        """
        nsegs = segment_count(part.size, part.segment_size)
        healthy: dict[int, str] = {}
        missing: list[int] = []
        unknown: dict[int, str] = {}
        liars: dict[int, str] = {}
        absent: list[int] = []

        async def one(i: int, nid: str | None) -> None:
            if nid is None or nid not in self._by_id:
                missing.append(i)
                return
            lost = self._lost_node(nid)
            if lost is True:
                missing.append(i)
                return
            if lost is None:
                unknown[i] = nid
                return
            if lying and lying.get(str(i)) == nid:
                missing.append(i)
                liars[i] = nid  # still a source for the segments where it is honest
                return
            try:
                st = await self._client.stat_shard(self._by_id[nid], shard_id(part.stripe_id, i))
            except NodeError as exc:
                if exc.status == 409:
                    missing.append(i)
                    absent.append(i)
                else:
                    self._health.report_failure(nid, str(exc))
                    unknown[i] = nid
                return
            if st is None or int(st.get("segments", -1)) != nsegs or st.get("index") != i:
                missing.append(i)
                absent.append(i)
            else:
                healthy[i] = nid

        nodes = list(part.nodes) + [None] * (part.k + part.m - len(part.nodes))
        await asyncio.gather(*(one(i, n) for i, n in enumerate(nodes)))
        for i in self._over_zone_cap(part, healthy):
            del healthy[i]
            missing.append(i)
        missing.sort()
        return Assessment(healthy=healthy, missing=missing, unknown=unknown, lying=liars,
                          absent=sorted(absent))

    def _over_zone_cap(self, part: PartLayout, healthy: dict[int, str]) -> list[int]:
        """Healthy shards beyond m in one zone, to move (a write in a zone outage spilled them).

        Counted as missing only while k others stay healthy, so the move never costs
        redundancy; until a zone-safe node is up, placement finds none and the entry waits.
        """
        per_zone: dict[str, list[int]] = {}
        for i, nid in sorted(healthy.items()):
            per_zone.setdefault(self._by_id[nid].zone, []).append(i)
        excess = [i for idxs in per_zone.values() for i in idxs[part.m:]]
        return excess if len(healthy) - len(excess) >= part.k else []

    def at_risk(self, part: PartLayout, a: Assessment) -> bool:
        """Fewer than k+2 healthy shards, or a zone whose loss would leave fewer than k:
        repaired before other stripes and at full rate whatever the client load."""
        zones: dict[str, int] = {}
        for nid in a.healthy.values():
            zones[self._by_id[nid].zone] = zones.get(self._by_id[nid].zone, 0) + 1
        worst_zone = max(zones.values(), default=0)
        return len(a.healthy) < min(part.k + 2, part.k + part.m) or \
            len(a.healthy) - worst_zone < part.k
