"""A write's commit never names a node removed from the cluster map since the write placed it.

A stripe is placed on the map a gateway holds when the write starts; `tessera node remove`
(plain, of an empty active node, or `--force` of a drained one) may take one of those nodes
out before the write commits. A commit naming it would leave an acknowledged stripe a shard
short from its first moment (or, with `write_quorum_extra = 0`, below k). So every commit
transaction that indexes a fresh stripe compares the membership record (`M`) of each node
the stripe names at the revision the gateway's map last saw (`guard`): no extra round trip,
and a removal applied before the commit makes the transaction fail. After a failed commit,
`recheck` re-reads the map once when one of those records moved (another read would only
fail again on the stale revision) and raises `NodeRemoved` when a named node is removed;
the caller discards the write's stripes and the client retries (S3 503).
"""

from __future__ import annotations

from collections.abc import Iterable

from storage.config import Config
from storage.errors import NodeRemoved
from storage.health import HealthTracker
from storage.keyspace import MEMBER, member_key, space
from storage.keyspace import unpack as unpack_key
from storage.membership import REMOVED, refresh
from storage.metadata import MetadataStore

_PREFIX = space(MEMBER)[0]


def _removed(node_id: str) -> NodeRemoved:
    return NodeRemoved(f"node {node_id!r} was removed from the cluster map before the write "
                       "that placed a shard on it committed")


def guard(health: HealthTracker, nodes: Iterable[str | None],
          compares: dict[bytes, int]) -> None:
    """Add to `compares` each named node's membership record at the revision the map holds;
    NodeRemoved at once for a node the map no longer has."""
    for nid in sorted({n for n in nodes if n}):
        rev = health.member_revision(nid)
        if rev is None:
            raise _removed(nid)
        compares[member_key(nid)] = rev


def guarded(compares: dict[bytes, int]) -> dict[bytes, int]:
    """The membership records among `compares` (what `guard` added)."""
    return {k: rev for k, rev in compares.items() if k.startswith(_PREFIX)}


async def recheck(meta: MetadataStore, cfg: Config, health: HealthTracker,
                  compares: dict[bytes, int]) -> None:
    """After a failed commit that `guard`ed `compares`: re-read the map (one range read) and
    apply it, so the next attempt compares the records as they are; NodeRemoved when a
    named node is removed now. Nothing when no membership record was compared."""
    keys = guarded(compares)
    if not keys:
        return
    members = {member_key(m.spec.id): m for m in await refresh(meta, cfg, health)}
    for k in sorted(keys):
        m = members.get(k)
        if m is None or m.state == REMOVED:
            raise _removed(str(unpack_key(k)[1]))
