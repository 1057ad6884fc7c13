"""Repair's lane of the node client (one batch request per node at a time) has a deadline:
a node that answers a byte at a time, so the socket's read timeout never fires, fails the
batch by then and frees the lane for the next one, instead of holding it for good."""

from __future__ import annotations

import asyncio

import aiohttp

from storage.config import NodeSpec
from storage.pipeline import shard_headers
from storage.shards.client import NodeClient, NodeError

DEADLINE_S = 0.5


async def test_a_dripping_node_fails_each_repair_batch_by_the_deadline() -> None:
    requests = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            requests += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/msgpack\r\n"
                         b"Content-Length: 1000000\r\n\r\n")
            while True:  # a byte every 50 ms: well inside the 15 s read timeout
                writer.write(b"\x00")
                await writer.drain()
                await asyncio.sleep(0.05)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    node = NodeSpec("n1", "az1", f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
    header = shard_headers(4, 2, 1 << 20, b"\x01" * 16)[0]
    async with aiohttp.ClientSession() as session:
        client = NodeClient(session, b"s" * 32, bulk_deadline_s=DEADLINE_S)
        reads = [asyncio.create_task(client.read_small(node, f"{'01' * 16}.{i}", header, 0, 1,
                                                       bulk=300_000)) for i in range(2)]
        async with asyncio.timeout(20):  # far past two deadlines, far short of "never"
            results = await asyncio.gather(*reads, return_exceptions=True)
        client.close()
    for r in results:
        assert isinstance(r, NodeError) and "Timeout" in str(r), r
    assert requests == 2  # the first batch's failure freed the lane for the second
    server.close()
    await server.wait_closed()

