"""BorrowedBodyWriter: a GET body of borrowed views goes out exact, with no copy of ours.

A real aiohttp server answers through the writer from one reused buffer that the handler
overwrites after each write returns (as the read path reuses its pooled buffers); a raw
socket client reads the response and checks every byte.
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from aiohttp import web

from gateway.s3 import sendbody
from gateway.s3.sendbody import SLICE_BYTES, BorrowedBodyWriter, HeldHeadResponse

CHUNK = 3 * SLICE_BYTES // 2  # a chunk of one and a half slices


def _pattern(i: int) -> bytes:
    return bytes((i * 7 + j) & 0xFF for j in range(256)) * (CHUNK // 256)


async def _serve(chunks: int):  # type: ignore[no-untyped-def]
    """A server whose GET answers `chunks` borrowed chunks of one reused buffer."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = HeldHeadResponse(status=200)
        resp.content_length = chunks * CHUNK
        await resp.prepare(request)
        buf = bytearray(CHUNK)
        async with BorrowedBodyWriter(request, resp) as body:
            for i in range(chunks):
                buf[:] = _pattern(i)
                await body.write(memoryview(buf))
                buf[:] = b"\xee" * CHUNK  # the borrowed bytes change as soon as it returns
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/o", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


def _get(port: int, rcvbuf: int | None = None, slow: bool = False) -> tuple[bytes, bytes]:
    """GET /o over a raw socket (blocking, in a thread): (head, body)."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /o HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = bytearray()
    while True:
        got = s.recv(4096 if slow else 1 << 20)
        if not got:
            break
        data += got
    s.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head, body


async def _fetch(chunks: int, rcvbuf: int | None = None, slow: bool = False) -> tuple[bytes, bytes]:
    """Serve `chunks` borrowed chunks and GET them once: (head, body)."""
    runner, port = await _serve(chunks)
    try:
        return await asyncio.to_thread(_get, port, rcvbuf, slow)
    finally:
        await runner.cleanup()


async def test_borrowed_body_exact_with_a_fast_reader() -> None:
    head, body = await _fetch(3)
    assert head.startswith(b"HTTP/1.1 200")
    assert f"Content-Length: {3 * CHUNK}".encode() in head
    assert body == b"".join(_pattern(i) for i in range(3))


async def test_borrowed_body_exact_when_the_socket_takes_part_of_a_slice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket that takes only part of each slice (as a full send buffer does; forced
    here, since how much a real socket takes depends on the machine): the rest goes
    through the transport, and still every byte is the one written at the time."""
    handed: list[int] = []
    real = BorrowedBodyWriter._hand_over
    real_writev = os.writev

    def partial(fd: int, parts: list) -> int:  # type: ignore[type-arg]
        first = memoryview(parts[0]).cast("B")
        return real_writev(fd, [first[:max(1, len(first) // 3)]])  # a third of the first

    monkeypatch.setattr(sendbody.os, "writev", partial, raising=False)

    async def counting(self: BorrowedBodyWriter, rest: list) -> None:  # type: ignore[type-arg]
        handed.append(sum(len(p) for p in rest))
        await real(self, rest)

    monkeypatch.setattr(BorrowedBodyWriter, "_hand_over", counting)
    head, body = await _fetch(4, 8192, True)
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b"".join(_pattern(i) for i in range(4))
    assert handed, "no slice went out in part: the case this test is for did not happen"


async def test_head_and_first_slice_leave_in_one_writev_of_the_borrowed_view(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No join of the head with the first slice (a copy of a MiB): both go to the socket
    in one call, the slice as a view of the caller's own buffer."""
    seen: list[list[tuple[type, int]]] = []
    real = os.writev

    def spy(fd: int, parts: list) -> int:  # type: ignore[type-arg]
        seen.append([(type(p), len(p)) for p in parts])
        return real(fd, parts)

    monkeypatch.setattr(sendbody.os, "writev", spy, raising=False)
    head, body = await _fetch(1)
    assert body == _pattern(0)
    assert seen, "the body never went to the socket by writev"
    first = seen[0]
    assert len(first) == 2 and first[0][0] is bytes and first[0][1] == len(head) + 4
    assert first[1] == (memoryview, SLICE_BYTES)


async def test_an_error_from_the_socket_leaves_the_write_to_aiohttp(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """writev failing (other than EAGAIN): aiohttp's own write sends the slice (and the
    held-back head) as before."""
    def broken(fd: int, parts: list) -> int:  # type: ignore[type-arg]
        raise OSError(5, "injected")

    monkeypatch.setattr(sendbody.os, "writev", broken, raising=False)
    head, body = await _fetch(2)
    assert head.startswith(b"HTTP/1.1 200")
    assert body == _pattern(0) + _pattern(1)



class _FakeTransport:
    """What `BorrowedBodyWriter.__aenter__` asks of a transport; `ssl_object` set or not."""

    def __init__(self, sock: socket.socket, tls: bool) -> None:
        self._extra = {"socket": sock, "ssl_object": object() if tls else None}

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (16384, 65536)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return True


class _FakeRequest:
    def __init__(self, transport: _FakeTransport) -> None:
        self.transport = transport


async def test_a_tls_connection_never_writes_the_raw_socket() -> None:
    """Under TLS the socket carries records, not the body's bytes: the writer keeps no
    descriptor to write to, so every slice goes through aiohttp's (encrypting) transport."""
    with socket.socket() as sock:
        for tls, direct in ((False, True), (True, False)):
            req = _FakeRequest(_FakeTransport(sock, tls))
            async with BorrowedBodyWriter(req, None) as w:  # type: ignore[arg-type]
                assert (w._fd >= 0) is direct


async def test_transport_copies_says_what_this_python_s_transport_does() -> None:
    """`TRANSPORT_COPIES` must match asyncio here: a view the socket did not take is either
    copied by the transport, or kept (3.12+) and then sent as the buffer is by then."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=a)
    try:
        buf = bytearray(b"o" * (4 << 20))
        transport.write(memoryview(buf))  # far more than the socket takes at once
        assert transport.get_write_buffer_size() > 0
        buf[:] = b"n" * len(buf)  # the caller reuses its buffer
        b.setblocking(False)
        got = bytearray()
        while len(got) < len(buf):
            try:
                got += b.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0)
        assert (got.count(b"n") == 0) == sendbody.TRANSPORT_COPIES
    finally:
        transport.abort()
        b.close()


async def test_a_transport_that_keeps_views_is_handed_copies(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the transport keeps views, what the socket did not take goes to it as a copy:
    an early exit never leaves a reused buffer's view queued on a connection."""
    monkeypatch.setattr(sendbody, "TRANSPORT_COPIES", False)
    written: list[object] = []

    class Transport:
        def is_closing(self) -> bool:
            return False

        def write(self, data: object) -> None:
            written.append(data)

        def get_write_buffer_size(self) -> int:  # what a stalled client's cut compares
            return 0

    class Writer:
        async def drain(self) -> None:
            return None

    class Request:
        transport = Transport()
        writer = Writer()

    w = BorrowedBodyWriter(Request(), None)  # type: ignore[arg-type]
    buf = bytearray(b"x" * 10)
    await w._hand_over([memoryview(buf)[2:]])
    buf[:] = b"y" * 10
    assert written == [b"x" * 8] and all(type(d) is bytes for d in written)
