"""A frame queued to a node sender whose request never takes it (it waits for a
connection, say) is let go after the stall limit, though the queue is not full: its
write's upload budget counts it until then (review15c finding 1, mend15c)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from storage.config import NodeSpec
from storage.shardfeed import ShardSender
from storage.shards.transport import NodeTransport


class _NoConnection:
    """A transport whose shard PUT never starts its body (waits for ever)."""

    async def put_shard(self, node: NodeSpec, sid: str, body: Any, segments: int,
                        length: int | None = None, *, replace: bool = False) -> None:
        await asyncio.Event().wait()


async def test_a_queued_frame_not_taken_within_the_stall_limit_is_let_go() -> None:
    node = NodeSpec(id="n1", zone="az1", address="127.0.0.1:9")
    sender = ShardSender(cast(NodeTransport, _NoConnection()), node, "s", b"h", 2, 0.2)
    let_go = asyncio.Event()
    await sender.send(b"frame", let_go.set)  # the queue is not full: no wait here
    async with asyncio.timeout(30):  # the old code never lets it go
        await let_go.wait()
    assert sender.error == "node n1 stalled for 0s"
    assert not sender.alive
    await sender.cancel()
