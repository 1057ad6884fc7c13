"""The gateway's streamed shard PUTs (`NodeClient.put_shard` with a length) go on sockets of
their own (`storage.shards.streamput`), so the node's lean front streams them
(`nodes.leanstream`) even after the client's health checks and JSON requests: a connection
the lean front once handed to aiohttp stays aiohttp's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from storage.config import NodeSpec
from storage.shards.client import NodeClient
from tests.contract.node_harness import Node, make_shard, node
from tests.contract.test_node_lean_front import wait_lines

__all__ = ["node"]  # the module's node process (fixture)


async def _chunks(body: bytes, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    for at in range(0, len(body), size):
        yield body[at:at + size]


async def test_a_streamed_put_after_a_health_check_is_served_by_the_lean_front(
        node: Node) -> None:
    spec = NodeSpec("n1", "az1", f"{node.host}:{node.port}")
    sid, _, blocks, body = make_shard(index=0, frames=24, block_size=262144, last=None)
    one = aiohttp.TCPConnector(limit=1)  # the health check's connection is the only one
    async with aiohttp.ClientSession(connector=one) as session:
        client = NodeClient(session, node.secret)
        assert (await client.health(spec))["status"] == "ok"
        await client.put_shard(spec, sid, _chunks(body), len(blocks), len(body))
        client.close()
    line = (await wait_lines(node, f"/v1/shards/{sid}", 1))[0]
    assert line["status"] == 201 and line.get("front") == "lean", line
