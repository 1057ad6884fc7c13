"""Placement: which nodes hold the k+m shards of a stripe.

Rendezvous (highest-random-weight) hashing ranks every eligible node for a stripe; shards
go to the best-ranked distinct nodes such that no zone holds more than m shards, so losing
a whole zone loses at most m shards of any stripe. The result is written into the
manifest; reads never recompute it, and only repair and the rebalancer move shards.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence

from storage.config import NodeSpec, Profile


def _score(stripe_id: bytes, node: NodeSpec) -> float:
    h = hashlib.blake2b(stripe_id + node.id.encode(), digest_size=8).digest()
    u = (int.from_bytes(h, "big") + 1) / 2**64
    return -node.weight / math.log(u)


def rank(stripe_id: bytes, nodes: Sequence[NodeSpec]) -> list[NodeSpec]:
    """Every node, best first, for this stripe (stable for a given cluster map)."""
    return sorted(nodes, key=lambda n: (_score(stripe_id, n), n.id), reverse=True)


def place(stripe_id: bytes, profile: Profile, nodes: Sequence[NodeSpec],
          exclude: Collection[str] = (), zone_counts: dict[str, int] | None = None,
          count: int | None = None) -> list[NodeSpec]:
    """Choose up to `count` (default k+m) distinct nodes, at most m per zone.

    `exclude` names nodes to skip (down, or already holding a shard of this stripe);
    `zone_counts` holds shards already placed per zone (for repair). Returns fewer nodes
    than asked when the healthy cluster cannot hold them zone-safely.
    """
    want = profile.width if count is None else count
    per_zone = dict(zone_counts or {})
    chosen: list[NodeSpec] = []
    for node in rank(stripe_id, [n for n in nodes if n.role == profile.role]):
        if len(chosen) == want:
            break
        if node.id in exclude or per_zone.get(node.zone, 0) >= profile.m:
            continue
        chosen.append(node)
        per_zone[node.zone] = per_zone.get(node.zone, 0) + 1
    return chosen


def place_for_write(stripe_id: bytes, profile: Profile, nodes: Sequence[NodeSpec],
                    ) -> list[NodeSpec]:
    """Placement for a new stripe: zone-safe, unless the zones that are up cannot take all
    k+m shards.

    With a whole zone down, at most m shards per zone may leave fewer slots than the write
    quorum (4+2 on three zones keeps only 4). Refusing every write during a zone outage is
    worse than a stripe that is briefly zone-unsafe, so the remaining shards spill onto the
    best-ranked other healthy nodes (still distinct nodes); the caller queues the stripe
    for repair, which restores zone safety once the zone is back. The same when the
    zone-safe slots reach the quorum but not k+m (two nodes of a zone down, one up): a
    stripe left a shard short survived one more failure instead of m, and a spilled shard
    never makes it worse (for any set of failed nodes it keeps at least as many shards,
    whole zones included).
    """
    return place_spares(stripe_id, profile, nodes, (), (), profile.width)


def place_spares(stripe_id: bytes, profile: Profile, nodes: Sequence[NodeSpec],
                 held: Sequence[NodeSpec], exclude: Collection[str], count: int,
                 ) -> list[NodeSpec]:
    """Up to `count` more nodes for a stripe whose shards `held` already sit on: the
    best-ranked ones that keep every zone at m shards or fewer, then (when those are too
    few) the best-ranked other nodes, as `place_for_write` spills. `exclude`: nodes not to
    use (the held ones are never used again). A write whose target failed sends that shard
    here before it is acknowledged (`StripeStore`), so it holds k+m shards whenever the
    cluster has k+m usable nodes."""
    counts: dict[str, int] = {}
    for n in held:
        counts[n.zone] = counts.get(n.zone, 0) + 1
    skip = {*exclude, *(n.id for n in held)}
    chosen = place(stripe_id, profile, nodes, skip, counts, count)
    if len(chosen) >= count:
        return chosen
    taken = skip | {n.id for n in chosen}
    spill = [n for n in rank(stripe_id, [n for n in nodes if n.role == profile.role])
             if n.id not in taken]
    return chosen + spill[: count - len(chosen)]


def zone_safe(node_ids: Sequence[str | None], nodes: Sequence[NodeSpec], m: int) -> bool:
    """True when the placed shards use distinct nodes and no zone holds more than m."""
    by_id = {n.id: n for n in nodes}
    placed = [i for i in node_ids if i is not None]
    if len(set(placed)) != len(placed):
        return False
    counts: dict[str, int] = {}
    for nid in placed:
        z = by_id[nid].zone
        counts[z] = counts.get(z, 0) + 1
    return all(c <= m for c in counts.values())
