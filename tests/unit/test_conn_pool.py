"""The lean node clients' shared connection pool: whole-shard PUTs to one node are bounded
in flight (a burst of uploads must not open a connection, and start an fsync, per shard),
and the response head parse both clients use."""

from __future__ import annotations

import asyncio

import pytest

from storage.config import NodeSpec
from storage.shards.connpool import FetchError, parse_head
from storage.shards.sender import ShardSender

LIMIT, REQUESTS = 3, 8


async def test_whole_shard_puts_to_one_node_are_bounded_in_flight() -> None:
    """A node that has not answered yet holds at most `max_in_flight` requests; the rest
    wait for a slot, then all complete."""
    pending = 0
    go = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal pending
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                pending += 1
                await go.wait()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    node = NodeSpec("n1", "az1", f"127.0.0.1:{port}")
    sender = ShardSender(max_in_flight=LIMIT)
    request = [b"PUT /x HTTP/1.1\r\nHost: n\r\nContent-Length: 0\r\n\r\n"]
    tasks = [asyncio.create_task(sender.request(node, lambda: request))
             for _ in range(REQUESTS)]
    slot = sender._pool.slot(node)
    async with asyncio.timeout(30):  # until every request reached the node or waits for a slot
        while pending + len(getattr(slot, "_waiters", None) or ()) < REQUESTS:
            await asyncio.sleep(0.01)
    assert pending == LIMIT
    go.set()
    assert await asyncio.gather(*tasks) == [(200, b"{}")] * REQUESTS
    sender.close()
    server.close()
    await server.wait_closed()


def test_the_head_parse_reads_status_length_and_connection() -> None:
    head = parse_head(b"HTTP/1.1 201 Created\r\nContent-Length: 12\r\nConnection: close")
    assert (head.status, head.length, head.keep_alive, head.chunked) == (201, 12, False, False)
    head = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")
    assert (head.length, head.keep_alive, head.chunked) == (None, True, True)
    with pytest.raises(FetchError):
        parse_head(b"SPDY/3 200 OK")
