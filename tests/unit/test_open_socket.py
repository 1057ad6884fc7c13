"""`connpool.open_socket`, the one way the gateway connects to a node (shard GETs, whole and
streamed PUTs): a numeric address needs no lookup (so a busy default executor cannot make a
healthy node miss the connect timeout), and an address whose socket cannot be made (a family
the host lacks) is skipped, not fatal (review11b: both broke connects that worked before)."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from storage.config import NodeSpec
from storage.shards.connpool import open_socket


async def _listener() -> tuple[asyncio.Server, int]:
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


async def test_a_numeric_address_connects_while_the_default_executor_is_busy() -> None:
    srv, port = await _listener()
    release = threading.Event()
    loop = asyncio.get_running_loop()
    busy = [loop.run_in_executor(None, release.wait) for _ in range(64)]  # every worker taken
    try:
        sock = await open_socket(NodeSpec("n1", "az1", f"127.0.0.1:{port}"), 3.0)
        assert sock.getpeername()[1] == port
        sock.close()
    finally:
        release.set()
        await asyncio.gather(*busy)
        srv.close()
        await srv.wait_closed()


async def test_an_address_whose_socket_cannot_be_made_is_skipped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    srv, port = await _listener()
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port_: int, **_: object) -> list[tuple]:
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_UDP, "",  # refused by socket()
                 ("127.0.0.1", port)),
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    try:
        sock = await open_socket(NodeSpec("n1", "az1", f"node.invalid:{port}"), 3.0)
        assert sock.getpeername()[1] == port
        sock.close()
    finally:
        srv.close()
        await srv.wait_closed()
