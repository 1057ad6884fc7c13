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


def _reads_steadily(sock: socket.socket, seconds: float) -> int:
    """Bytes taken in `seconds`, 16 KiB every 50 ms (320 KB/s, a slow consumer's steady
    pace); stops early at a reset."""
    got, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            d = sock.recv(16384)
        except ConnectionResetError:
            return -got
        if not d:
            return -got
        got += len(d)
        time.sleep(0.05)
    return got


async def test_a_client_taking_bytes_steadily_is_not_cut(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """review22f: the idle check must see the client's progress, not only the transport's
    buffer, which shrinks only when the kernel's send buffer (autotuned to 4 MiB) falls to
    two thirds: a client taking 320 KB/s (~1/4 of that per SEND_IDLE_S) was reset."""
    monkeypatch.setattr(sendbody, "SEND_IDLE_S", 2.0)
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
        await asyncio.to_thread(sock.connect, ("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = await asyncio.to_thread(_reads_steadily, sock, 6.0)
        assert got > 0 and not app[CUT].is_set(), f"reset after {-got} bytes taken steadily"
    finally:
        sock.close()
        await runner.cleanup()


SMALL_SNDBUF = web.AppKey("small_sndbuf", bool)


async def _serve_small_sndbuf(request: web.Request) -> web.StreamResponse:
    """`_serve` with a small kernel send buffer: each time the socket is writable it takes
    a few KiB, so the transport's buffer shrinks in steps, a window ending part way."""
    request.transport.get_extra_info("socket").setsockopt(  # type: ignore[union-attr]
        socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    return await _serve(request)


async def test_a_wait_that_saw_progress_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """review22f: after a SEND_IDLE_S in which the client took some bytes, the wait went on
    with a fresh aiohttp drain, whose waiter the timeout had cancelled: CancelledError at
    once, and the answer was cut after ~1 MiB of its 16 MiB."""
    monkeypatch.setattr(sendbody, "SEND_IDLE_S", 1.0)
    app = web.Application()
    app[CUT] = asyncio.Event()
    app.router.add_get("/", _serve_small_sndbuf)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await asyncio.to_thread(sock.connect, ("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.to_thread(_reads_steadily, sock, 3.0)  # a slow, steady start
        sock.settimeout(30)
        got = 0
        while chunk := await asyncio.to_thread(sock.recv, 1 << 20):
            got += len(chunk)
            if got > SLICES * sendbody.SLICE_BYTES - (1 << 20):
                break
        assert got > SLICES * sendbody.SLICE_BYTES - (1 << 20), f"cut after {got} more"
    finally:
        sock.close()
        await runner.cleanup()
