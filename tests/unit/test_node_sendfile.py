"""The node's shard sender (`nodes.shardget.send_file`): straight `os.sendfile` calls while
the socket takes the bytes, asyncio's `loop.sendfile` only for what it does not, and in
every case the exact bytes in order, after anything already queued on the transport."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nodes.shardget import send_file


class _Server(asyncio.Protocol):
    def __init__(self, ready: asyncio.Future[asyncio.Transport]) -> None:
        self._ready = ready

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._ready.set_result(transport)  # type: ignore[arg-type]


@pytest.fixture
async def pair() -> AsyncIterator[tuple[asyncio.Transport, asyncio.StreamReader, list[int]]]:
    """A server-side transport, the client's reader, and the counts `loop.sendfile` got."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[asyncio.Transport] = loop.create_future()
    server = await loop.create_server(lambda: _Server(ready), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    transport = await ready
    calls: list[int] = []
    real = loop.sendfile

    async def counting(t: Any, f: Any, offset: int = 0, count: int | None = None,
                       **kw: Any) -> int:
        calls.append(count or 0)
        return await real(t, f, offset, count, **kw)

    loop.sendfile = counting  # type: ignore[method-assign]
    try:
        yield transport, reader, calls
    finally:
        loop.sendfile = real  # type: ignore[method-assign]
        transport.close()
        writer.close()
        server.close()
        await server.wait_closed()


def _file(tmp_path: Path, size: int) -> tuple[Any, bytes]:
    data = os.urandom(size)
    path = tmp_path / "shard"
    path.write_bytes(data)
    return open(path, "rb", buffering=0), data  # noqa: SIM115 - closed by the test


async def test_a_window_the_socket_takes_goes_out_without_asyncio_sendfile(
        pair: tuple[asyncio.Transport, asyncio.StreamReader, list[int]],
        tmp_path: Path) -> None:
    transport, reader, calls = pair
    f, data = _file(tmp_path, 300_000)
    with f:
        await send_file(asyncio.get_running_loop(), transport, f, 1000, 64 * 1024)
        assert calls == []
        assert await reader.readexactly(64 * 1024) == data[1000:1000 + 64 * 1024]


async def test_what_the_socket_does_not_take_follows_through_asyncio_in_order(
        pair: tuple[asyncio.Transport, asyncio.StreamReader, list[int]],
        tmp_path: Path) -> None:
    transport, reader, calls = pair
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    f, data = _file(tmp_path, 2 * 1024 * 1024)
    with f:
        transport.write(b"head")  # queued before the file's bytes, whatever the socket took
        sending = asyncio.create_task(
            send_file(asyncio.get_running_loop(), transport, f, 7, len(data) - 7))
        got = await reader.readexactly(4 + len(data) - 7)
        await sending
    assert got == b"head" + data[7:]
    assert calls and sum(calls) <= len(data) - 7  # the rest went through loop.sendfile


async def test_a_file_shorter_than_asked_ends_the_sending(
        pair: tuple[asyncio.Transport, asyncio.StreamReader, list[int]],
        tmp_path: Path) -> None:
    transport, reader, calls = pair
    f, data = _file(tmp_path, 5000)
    with f:
        await asyncio.wait_for(
            send_file(asyncio.get_running_loop(), transport, f, 1000, 10_000), 10)
    transport.close()
    assert await reader.read() == data[1000:]
    assert calls == []
