"""Lost packs cleared once repaired: a node reports the packs a restart found gone
(`nodes.packdrops`; health `packs_lost`) until it is told they are dealt with. The repair
sweep tells it: after a whole pass that began after the node last started (every stripe was
then checked against the node as it is without those packs, each shard it no longer had
queued) and with the repair queue empty (each queued stripe rebuilt, or no longer
referenced), no shard the lost packs held is still missing, so the report is cleared.

Why here: the node cannot know which shards a lost pack held (its records went with it);
only a pass over the manifests can say every one of them is whole again. An operator can
also acknowledge a loss (`tessera node lost-packs ID --ack`), e.g. on a cluster whose queue
never empties.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from storage.config import NodeSpec
from storage.keyspace import REPAIR, space
from storage.metadata import MetadataStore
from storage.shards.client import NodeError
from storage.shards.transport import NodeTransport

log = logging.getLogger(__name__)

HEALTH_PARALLEL = 16  # nodes asked at once at a pass's end (each call may take its 2 s
# timeout: one by one, a few slow nodes held the leased sweep step N x 2 s; review22e L7)
SKEW_S = 1.0  # a node's start must precede the pass by this at least (a margin: the start is
# put on this host's clock from the node's own `now`, read after its answer, so it is late)


async def clear_repaired_losses(meta: MetadataStore, client: NodeTransport,
                                nodes: list[NodeSpec], pass_started: float,
                                clock: Callable[[], float] = time.time) -> dict[str, list[int]]:
    """After a sweep pass that began at `pass_started` (this host's `clock`): tell each of
    `nodes` that reports lost packs and started before the pass that they are repaired,
    when the repair queue is empty. Node id -> the packs it stopped reporting."""
    if await meta.range(*space(REPAIR), limit=1):
        return {}  # a stripe still waits: its shard may be one a lost pack held
    gate = asyncio.Semaphore(HEALTH_PARALLEL)

    async def one(node: NodeSpec) -> list[int]:
        async with gate:
            return await _clear_node(client, node, pass_started, clock)
    acked = await asyncio.gather(*(one(node) for node in nodes))
    return {node.id: got for node, got in zip(nodes, acked, strict=True) if got}


async def _clear_node(client: NodeTransport, node: NodeSpec, pass_started: float,
                      clock: Callable[[], float]) -> list[int]:
    """`clear_repaired_losses` for one node: the packs it stopped reporting."""
    try:
        h = await client.health(node)
        lost = [int(x) for x in h.get("packs_lost") or []]
        # the node's start on this host's clock: its `now` was read before this host's
        # clock is, so the start is put late, never early (the safe side)
        started = float(h["started"]) - float(h["now"]) + clock()
    except (NodeError, KeyError, TypeError, ValueError):
        return []
    if not lost or started > pass_started - SKEW_S:
        return []
    try:
        acked = await client.ack_lost_packs(node, lost)
    except NodeError as exc:
        log.warning("node %s: lost packs %s not cleared (%s)", node.id, lost, exc)
        return []
    if acked:
        log.warning("node %s: lost packs %s cleared: every shard they held is repaired",
                    node.id, acked)
    return acked
