"""The S3 listener's eager protocol (`gateway.s3.eager`): a bodiless GET or HEAD on an idle
connection is started from `data_received`; everything else is served by aiohttp's
`start()` as before, in order, with the same bytes on the wire.

Two levels: the protocol alone with a handler the test controls (which path served each
request, order, suspension, timeouts, keep-alive), and the real S3 pipeline over a wired
cluster served twice, eager and not, answering the same raw requests byte for byte.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.app import create_s3_server
from gateway.metrics import Metrics
from gateway.s3 import eager
from gateway.s3.server import S3Server
from gateway.s3.sigv4_sign import sign_headers
from ops.localports import free_port
from storage.testing.simnodes import SimNodes
from tests.inproc import sim_config, wired_cluster

pytestmark = pytest.mark.skipif(not eager.EAGER_NEEDED, reason="3.12+: aiohttp's own eager tasks")
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@pytest.fixture
def eager_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests started eagerly, in order."""
    seen: list[str] = []
    real = eager.EagerTask.__init__

    def spy(self: Any, coro: Any, loop: Any, context: Any) -> None:
        seen.append(coro.cr_frame.f_locals["request"].path)
        real(self, coro, loop, context)

    monkeypatch.setattr(eager.EagerTask, "__init__", spy)
    return seen


async def _serve(server: web.Server) -> tuple[int, Callable[[], Awaitable[None]]]:
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return port, runner.cleanup


async def _read_answers(reader: asyncio.StreamReader, methods: list[str]) -> list[bytes]:
    """One whole answer (head and body by Content-Length) per request method given."""
    out = []
    for method in methods:
        head = await reader.readuntil(b"\r\n\r\n")
        found = re.search(rb"\r\ncontent-length: *([0-9]+)", head, re.I)
        length = int(found[1]) if found and method != "HEAD" else 0
        out.append(head + (await reader.readexactly(length) if length else b""))
    return out


async def _exchange(port: int, raw: bytes, methods: list[str]) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await _read_answers(reader, methods)
    finally:
        writer.close()


def _echo(release: dict[str, asyncio.Event] | None = None) -> Handler:
    """Answers with the method and path; waits first for `release[path]` if given."""
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        if release and request.path in release:
            await release[request.path].wait()
        return web.Response(text=f"{request.method} {request.path} {len(body)}")
    return handle


def _get(path: str, extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: x\r\n{extra}\r\n".encode()


async def test_a_lone_get_is_started_eagerly_and_answered(eager_starts: list[str]) -> None:
    port, stop = await _serve(eager.EagerServer(_echo()))
    try:
        [answer] = await _exchange(port, _get("/a"), ["GET"])
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"GET /a 0")
        [answer] = await _exchange(port, b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n", ["HEAD"])
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        await stop()
    assert eager_starts == ["/a", "/h"]


async def test_bodied_and_other_requests_go_to_aiohttp_in_order(eager_starts: list[str]
                                                                ) -> None:
    port, stop = await _serve(eager.EagerServer(_echo()))
    put = b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    chunked = (b"GET /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"2\r\nhi\r\n0\r\n\r\n")
    sized_get = b"GET /s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    try:
        answers = await _exchange(port, _get("/1") + put + _get("/2") + chunked + _get("/3")
                                  + sized_get + b"DELETE /d HTTP/1.1\r\nHost: x\r\n\r\n"
                                  + _get("/4"), ["GET"] * 8)
    finally:
        await stop()
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers] == [
        b"GET /1 0", b"PUT /p 3", b"GET /2 0", b"GET /c 2", b"GET /3 0", b"GET /s 2",
        b"DELETE /d 0", b"GET /4 0"]
    # only bodiless GETs on an idle connection started here; /2, /3 and /4 arrived with
    # aiohttp's start() serving the queue, so it served them too
    assert eager_starts[0] == "/1"
    assert not {"/p", "/c", "/s", "/d"} & set(eager_starts)


async def test_a_suspended_eager_request_keeps_later_ones_waiting(eager_starts: list[str]
                                                                  ) -> None:
    release = {"/slow": asyncio.Event()}
    port, stop = await _serve(eager.EagerServer(_echo(release)))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_get("/slow") + _get("/next"))  # pipelined: /next waits its turn
        await writer.drain()
        for _ in range(100):
            if eager_starts:
                break
            await asyncio.sleep(0)
        assert eager_starts == ["/slow"]
        writer.write(_get("/last") + b"PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz")
        await writer.drain()
        read = asyncio.ensure_future(_read_answers(reader, ["GET", "GET", "GET", "PUT"]))
        for _ in range(50):  # nothing may be answered before /slow is
            await asyncio.sleep(0)
        assert not read.done()
        release["/slow"].set()
        answers = await read
    finally:
        writer.close()
        await stop()
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers] == [
        b"GET /slow 0", b"GET /next 0", b"GET /last 0", b"PUT /p 1"]
    assert eager_starts == ["/slow", "/next", "/last"]  # each once the one before was done


async def test_an_eager_request_is_a_task_timeouts_work(eager_starts: list[str]) -> None:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        assert asyncio.current_task() is not None
        try:
            async with asyncio.timeout(0):
                await asyncio.Event().wait()
        except TimeoutError:
            return web.Response(text="timed out")
        return web.Response(text="no")

    port, stop = await _serve(eager.EagerServer(handle))
    try:
        [answer] = await _exchange(port, _get("/t"), ["GET"])
    finally:
        await stop()
    assert answer.endswith(b"timed out") and eager_starts == ["/t"]


async def test_keep_alive_close_and_http10_follow_aiohttp(eager_starts: list[str]) -> None:
    port, stop = await _serve(eager.EagerServer(_echo()))
    try:
        for raw in (_get("/c", "Connection: close\r\n"), _get("/o", version="1.0")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            [answer] = await _read_answers(reader, ["GET"])
            assert answer.startswith(b"HTTP/1.") and b"200 OK" in answer
            assert await reader.read() == b""  # closed after the answer, as aiohttp does
            writer.close()
    finally:
        await stop()
    assert eager_starts == ["/c", "/o"]


async def test_the_keep_alive_timer_spares_a_request_in_flight() -> None:
    release = {"/slow": asyncio.Event()}
    server = eager.EagerServer(_echo(release), keepalive_timeout=3600)
    port, stop = await _serve(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_get("/slow"))
        await writer.drain()
        while not server.connections or server.connections[0]._eager is None:
            await asyncio.sleep(0)
        [proto] = server.connections
        proto._next_keepalive_close_time = 0  # the idle timer's time has come
        proto._process_keepalive()
        assert proto.transport is not None and not proto.transport.is_closing()
        release["/slow"].set()
        [answer] = await _read_answers(reader, ["GET"])
        assert answer.endswith(b"GET /slow 0")
    finally:
        writer.close()
        await stop()


# -- the real S3 pipeline, eager and not: the same bytes ------------------------------------

_MASKS = (re.compile(rb"(?im)^date: .*$"), re.compile(rb"[0-9A-F]{16}"))


def _masked(answer: bytes) -> bytes:
    for mask in _MASKS:  # the Date and the request ids differ between any two answers
        answer = mask.sub(b"<masked>", answer)
    return answer


@pytest.fixture
async def two_fronts(tmp_path: Path) -> AsyncIterator[tuple[int, int, Any]]:
    """The same cluster served eagerly and by aiohttp's own protocol; the key to sign."""
    cfg = sim_config(tmp_path, 4096)
    async with wired_cluster(tmp_path, cfg, SimNodes(list(cfg.nodes))) as cluster:
        cred = await cluster.tenants.create_key("t")
        await cluster.buckets.create("t", "bk")
        server = S3Server(cluster, cfg.gateway, Metrics())
        ports, stops = [], []
        for is_eager in (True, False):
            port, stop = await _serve(create_s3_server(server, eager=is_eager))
            ports.append(port)
            stops.append(stop)
        try:
            yield ports[0], ports[1], cred
        finally:
            for stop in stops:
                await stop()


def _signed(cred: Any, method: str, target: str, headers: dict[str, str] | None = None,
            body: bytes = b"", version: str = "1.1") -> bytes:
    signed = sign_headers(method, f"http://127.0.0.1{target}", headers or {}, body,
                          cred.access_key, cred.secret_key)
    head = "".join(f"{k}: {v}\r\n" for k, v in signed.items())
    return f"{method} {target} HTTP/{version}\r\n{head}\r\n".encode() + body


async def test_s3_answers_are_the_same_bytes_eager_or_not(
        two_fronts: tuple[int, int, Any], eager_starts: list[str]) -> None:
    on, off, cred = two_fronts
    body = bytes(range(256)) * 12
    put = _signed(cred, "PUT", "/bk/obj", {"Content-Length": str(len(body)),
                                           "Content-Type": "text/plain"}, body)
    assert b" 200 OK" in (await _exchange(off, put, ["PUT"]))[0]
    forged = _signed(cred, "GET", "/bk/obj").replace(b"Signature=", b"Signature=0")
    cases: list[tuple[bytes, list[str]]] = [
        (_signed(cred, "GET", "/bk/obj"), ["GET"]),
        (_signed(cred, "HEAD", "/bk/obj"), ["HEAD"]),
        (_signed(cred, "GET", "/bk/obj", {"Range": "bytes=10-99"}), ["GET"]),
        (_signed(cred, "GET", "/bk/obj", {"If-None-Match": "*"}), ["GET"]),
        (_signed(cred, "GET", "/bk/missing"), ["GET"]),
        (_signed(cred, "HEAD", "/bk/missing"), ["HEAD"]),
        (_signed(cred, "GET", "/nobucket/obj"), ["GET"]),
        (forged, ["GET"]),
        (b"GET /bk/obj HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", ["GET"]),  # anonymous
        (_signed(cred, "GET", "/bk/obj?acl"), ["GET"]),
        (_signed(cred, "GET", "/bk?list-type=2"), ["GET"]),
        (_signed(cred, "GET", "/bk/obj", version="1.0"), ["GET"]),
        (_signed(cred, "GET", "/bk/obj", {"Origin": "http://a.example"}), ["GET"]),
        (_signed(cred, "GET", "/bk/obj") + _signed(cred, "HEAD", "/bk/obj")
         + _signed(cred, "GET", "/bk/missing"), ["GET", "HEAD", "GET"]),  # pipelined
        (put + _signed(cred, "GET", "/bk/obj"), ["PUT", "GET"]),
    ]
    for raw, methods in cases:
        got_on = await _exchange(on, raw, methods)
        got_off = await _exchange(off, raw, methods)
        assert [_masked(a) for a in got_on] == [_masked(a) for a in got_off], raw[:60]
    assert len(eager_starts) >= len(cases)  # the eager front did serve them
