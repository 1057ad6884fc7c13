"""A write's commit never names a node removed from the cluster map since the write placed it.

A stripe is placed on the map a gateway holds when the write starts; `tessera node remove`
(plain, of an empty active node, or `--force` of a drained one) may take one of those nodes
out before the write commits. A commit naming it would leave an acknowledged stripe a shard
short from its first moment (or, with `write_quorum_extra = 0`, below k). Every removal
rewrites the membership epoch record (`member_epoch_key`) in its own transaction, and every
commit transaction that indexes a fresh stripe compares that one record at the revision the
gateway's map was read with (`guard`): one compare whatever the node count, no extra round
trip, and a drain or an activation (which does not rewrite it) fails no commit. A named node
the map no longer has raises `NodeRemoved` at once. After a failed commit, `recheck` reads
the epoch record and re-reads the map only if it moved; the commit's next attempt guards
again on that map, so a named node removed meanwhile raises `NodeRemoved` there: the caller
discards the write's stripes and the client retries (S3 503).
"""

from __future__ import annotations

from collections.abc import Iterable

from storage.config import Config
from storage.errors import NodeRemoved
from storage.health import HealthTracker
from storage.keyspace import member_epoch_key
from storage.membership import refresh
from storage.metadata import MetadataStore

EPOCH = member_epoch_key()


def guard(health: HealthTracker, nodes: Iterable[str | None],
          compares: dict[bytes, int]) -> None:
    """Add to `compares` the membership epoch the map holds; NodeRemoved at once for a
    named node the map no longer has."""
    named = sorted({n for n in nodes if n})
    if not named:
        return
    for nid in named:
        if not health.is_member(nid):
            raise NodeRemoved(f"node {nid!r} was removed from the cluster map before the "
                              "write that placed a shard on it committed")
    compares[EPOCH] = health.member_epoch


def guarded(compares: dict[bytes, int]) -> dict[bytes, int]:
    """The membership epoch compare among `compares` (what `guard` added), if any."""
    return {EPOCH: compares[EPOCH]} if EPOCH in compares else {}


async def recheck(meta: MetadataStore, cfg: Config, health: HealthTracker,
                  compares: dict[bytes, int]) -> None:
    """After a failed commit that `guard`ed `compares`: if the epoch record moved since
    (a removal), re-read the map (one range read) and apply it, so the next attempt's
    `guard` sees the removal; nothing when it did not move or was not compared."""
    rev = compares.get(EPOCH)
    if rev is None:
        return
    item = await meta.get(EPOCH)
    if (item.revision if item else 0) != rev:
        await refresh(meta, cfg, health)
