"""The node's shard sender (`nodes.shardget.send_file`): straight `os.sendfile` calls from
the loop while the socket takes the bytes, a wait for the socket to drain when it does not
(no `loop.sendfile`: uvloop, the node's loop, has none), and in every case the exact bytes
in order, after anything already queued on the transport. Every test runs on asyncio's
loop and on uvloop."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from nodes import shardget
from nodes.shardget import send_file


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    return (uvloop.EventLoopPolicy() if request.param == "uvloop"
            else asyncio.DefaultEventLoopPolicy())


class _Server(asyncio.Protocol):
    def __init__(self, ready: asyncio.Future[asyncio.Transport]) -> None:
        self._ready = ready

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._ready.set_result(transport)  # type: ignore[arg-type]


@pytest.fixture
async def pair() -> AsyncIterator[tuple[asyncio.Transport, asyncio.StreamReader]]:
    """A server-side transport and the client's reader."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[asyncio.Transport] = loop.create_future()
    server = await loop.create_server(lambda: _Server(ready), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    transport = await ready
    try:
        yield transport, reader
    finally:
        transport.close()
        writer.close()
        server.close()
        await server.wait_closed()


def _file(tmp_path: Path, size: int) -> tuple[Any, bytes]:
    data = os.urandom(size)
    path = tmp_path / "shard"
    path.write_bytes(data)
    return open(path, "rb", buffering=0), data  # noqa: SIM115 - closed by the test


def _small_buffer(transport: asyncio.Transport) -> None:
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                  16 * 1024)


async def test_a_window_the_socket_takes_goes_out(
        pair: tuple[asyncio.Transport, asyncio.StreamReader], tmp_path: Path) -> None:
    transport, reader = pair
    f, data = _file(tmp_path, 300_000)
    with f:
        assert await send_file(asyncio.get_running_loop(), transport, f, 1000,
                               64 * 1024) == 64 * 1024
        assert await reader.readexactly(64 * 1024) == data[1000:1000 + 64 * 1024]


async def test_what_the_socket_does_not_take_follows_once_it_drains(
        pair: tuple[asyncio.Transport, asyncio.StreamReader], tmp_path: Path) -> None:
    transport, reader = pair
    _small_buffer(transport)
    f, data = _file(tmp_path, 2 * 1024 * 1024)
    with f:
        sending = asyncio.create_task(
            send_file(asyncio.get_running_loop(), transport, f, 7, len(data) - 7))
        got = await reader.readexactly(len(data) - 7)
        assert await sending == len(data) - 7
    assert got == data[7:]


async def test_bytes_the_transport_holds_go_out_before_the_file(
        pair: tuple[asyncio.Transport, asyncio.StreamReader], tmp_path: Path) -> None:
    transport, reader = pair
    _small_buffer(transport)
    head = os.urandom(1024 * 1024)
    f, data = _file(tmp_path, 1024 * 1024)
    with f:
        transport.write(head)  # more than the socket takes: the transport queues the rest
        assert transport.get_write_buffer_size() > 0
        sending = asyncio.create_task(
            send_file(asyncio.get_running_loop(), transport, f, 0, len(data)))
        got = await reader.readexactly(len(head) + len(data))
        assert await sending == len(data)
    assert got == head + data


def _watch_waits(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Short wait slices (0.05 s), and an event set once `send_file` waits for the socket."""
    monkeypatch.setattr(shardget, "WAIT_SLICE_S", 0.05)
    waiting = asyncio.Event()
    real = shardget._writable

    async def seen(loop: asyncio.AbstractEventLoop, out: int) -> None:
        waiting.set()
        await real(loop, out)

    monkeypatch.setattr(shardget, "_writable", seen)
    return waiting


async def test_a_transport_closed_while_waiting_ends_the_sending(
        pair: tuple[asyncio.Transport, asyncio.StreamReader], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    transport, _ = pair
    waiting = _watch_waits(monkeypatch)
    _small_buffer(transport)
    f, _ = _file(tmp_path, 8 * 1024 * 1024)
    with f:  # the reader never reads: the socket fills and the sender waits
        sending = asyncio.create_task(
            send_file(asyncio.get_running_loop(), transport, f, 0, 8 * 1024 * 1024))
        await asyncio.wait_for(waiting.wait(), 10)
        transport.abort()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(sending, 10)


async def test_a_file_shorter_than_asked_ends_the_sending(
        pair: tuple[asyncio.Transport, asyncio.StreamReader], tmp_path: Path) -> None:
    transport, reader = pair
    f, data = _file(tmp_path, 5000)
    with f:
        assert await asyncio.wait_for(
            send_file(asyncio.get_running_loop(), transport, f, 1000, 10_000), 10) == 4000
    transport.close()
    assert await reader.read() == data[1000:]


async def test_a_transport_aborted_while_its_socket_stays_full_ends_the_sending(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The socket never drains (a Unix socket pair whose peer never reads: no window opens
    late, unlike TCP on loopback) and the transport is aborted while the sender waits: the
    duplicate descriptor keeps the socket open, so no writability wakes the sender; only the
    wait's slice does (review15h: the TCP test above passes with the slice removed)."""
    waiting = _watch_waits(monkeypatch)
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
        asyncio.Protocol, ours)
    f, _ = _file(tmp_path, 8 * 1024 * 1024)
    try:
        with f:
            sending = asyncio.create_task(send_file(
                asyncio.get_running_loop(), transport, f, 0, 8 * 1024 * 1024))
            await asyncio.wait_for(waiting.wait(), 10)
            transport.abort()
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(sending, 10)
    finally:
        transport.close()
        peer.close()
