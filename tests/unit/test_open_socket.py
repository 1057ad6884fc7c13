"""`connpool.open_socket`, the one way the gateway connects to a node (shard GETs, whole and
streamed PUTs): a numeric address needs no lookup (so a busy default executor cannot make a
healthy node miss the connect timeout), and an address whose socket cannot be made (a family
the host lacks) is skipped, not fatal (review11b: both broke connects that worked before)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator

import pytest

from storage.config import NodeSpec
from storage.shards.connpool import open_socket


@contextlib.asynccontextmanager
async def _listener() -> AsyncIterator[int]:
    """A port on 127.0.0.1 that accepts connections while the block runs."""
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


async def _connects(address: str, port: int) -> None:
    sock = await open_socket(NodeSpec("n1", "az1", f"{address}:{port}"), 3.0)
    assert sock.getpeername()[1] == port
    sock.close()


async def test_a_numeric_address_connects_while_the_default_executor_is_busy() -> None:
    release = threading.Event()
    loop = asyncio.get_running_loop()
    busy = [loop.run_in_executor(None, release.wait) for _ in range(64)]  # every worker taken
    try:
        async with _listener() as port:
            await _connects("127.0.0.1", port)
    finally:
        release.set()
        await asyncio.gather(*busy)


async def test_an_address_whose_socket_cannot_be_made_is_skipped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port_: int, **_: object) -> list[tuple]:
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_UDP, "",  # refused by socket()
                 ("127.0.0.1", port_)),
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port_))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    async with _listener() as port:
        await _connects("node.invalid", port)
