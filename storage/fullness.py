"""Whether a refused write was refused for full disks ("storage full") or because too few
nodes answered ("too few storage nodes are reachable"): both are S3 503s, but an operator
reading the log looks at disks for one and at the network for the other.

One rule for every write path (one-segment small and whole, streamed, and the placement
refusal before any node is asked), decided from what the nodes say of their disks, never
from the refusal's error text: each node of the profile's role that did not take a shard of
this write is asked for its free bytes (`HealthTracker.free_bytes`); a node with less room
than the shard it would hold (`need`) is known full. The refusal is for full disks when
some node is and the nodes not known full are fewer than the write quorum: had every one of
them answered, the write would still have fallen short. A node that stalled or could not be
reached, and does not answer the look either, counts as having room, so a refusal mostly
caused by stalls is not called full (review20a).
"""

from __future__ import annotations

from collections.abc import Collection

from storage.health import HealthTracker
from storage.pipeline import StripeCodec, shard_file_bytes


def shard_need(codec: StripeCodec, size: int | None) -> int:
    """What each node holds of a stripe of `size` bytes (unknown or 0: one segment's
    worth); a node with less room cannot take its shard."""
    return shard_file_bytes(size or codec.segment_size, codec.segment_size, codec.codec.k)


async def refused_for_space(health: HealthTracker, role: str, quorum: int, need: int,
                            took: Collection[str] = ()) -> bool:
    """Whether full disks are why a write of shards of `need` bytes on nodes of `role` was
    refused below `quorum`; `took`: the nodes that took one of its shards (they had room,
    and are not asked)."""
    nodes = health.members(role)
    free = await health.free_bytes([n for n in nodes if n.id not in took])
    full = {nid for nid, f in free.items() if f < need}
    return bool(full) and len(nodes) - len(full) < quorum
