"""A GET answer's client that takes no byte (a TCP window left at zero) is cut after
`SEND_IDLE_S`, instead of keeping the read path's buffers for as long as it likes."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiohttp import web

from gateway.s3 import sendbody

SLICES = 16  # of 1 MiB: far more than the kernel's buffers on both ends hold
CUT = web.AppKey("cut", asyncio.Event)


async def _serve(request: web.Request) -> web.StreamResponse:
    resp = sendbody.HeldHeadResponse(status=200)
    resp.content_length = SLICES * sendbody.SLICE_BYTES
    await resp.prepare(request)
    chunk = bytearray(sendbody.SLICE_BYTES)
    try:
        async with sendbody.BorrowedBodyWriter(request, resp) as body:
            for _ in range(SLICES):
                await body.write(chunk)
    except ConnectionError:
        request.app[CUT].set()
        raise
    await resp.write_eof()
    return resp


def _reset_before(sock: socket.socket, deadline: float) -> bool:
    """Whether the connection is reset (its TCP state left ESTABLISHED) before `deadline`,
    looked at without reading (a read would open the window)."""
    while time.monotonic() < deadline:
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != 1:  # ESTABLISHED
            return True
        time.sleep(0.05)
    return False


async def test_a_client_taking_no_byte_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sendbody, "SEND_IDLE_S", 0.5)
    app = web.Application()
    app[CUT] = asyncio.Event()
    app.router.add_get("/", _serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a window soon full
        await asyncio.to_thread(sock.connect, ("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and nothing read
        assert await asyncio.to_thread(_reset_before, sock, time.monotonic() + 60)
        assert app[CUT].is_set()
        with pytest.raises(ConnectionResetError):  # a reset: what was unread is gone too
            while sock.recv(1 << 20):
                pass
    finally:
        sock.close()
        await runner.cleanup()
