"""`storage.widereads.wide_reads`: while a large body streams in, the connection receives up
to a MiB per `recv` and buffers up to 2 MiB before pausing (aiohttp's default pauses at
128 KiB, asyncio's reads at most 256 KiB), and the connection gets its defaults back for
the next request on it. Real aiohttp server and client over loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from storage.widereads import WIDE_READ_BYTES, WideBudget, wide_reads

BODY = 3 * 1024 * 1024 // 2  # more than aiohttp's 128 KiB pause, less than 2 MiB
SENT = web.AppKey("sent", bytes)
ONE_WIDE = WideBudget(3 * WIDE_READ_BYTES)  # room for one widened body at a time
INSIDE: list[asyncio.Event] = []  # set as each budgeted request holds its reads


async def _buffered(request: web.Request, at_least: int) -> None:
    """Return once `at_least` body bytes were received without the handler reading any
    (bounded by the test's timeout: a reader paused at its default limit never gets
    there)."""
    while request.content.total_bytes < at_least:
        await asyncio.sleep(0.001)


async def _wide(request: web.Request) -> web.Response:
    transport: Any = request.transport
    with wide_reads(transport, request.content):
        inside = transport.max_size
        limits = request.content.get_read_buffer_limits()
        await asyncio.wait_for(_buffered(request, BODY), 20)
        data = await request.content.read()
    return web.json_response({"inside": inside, "after": transport.max_size,
                              "limits": list(limits), "len": len(data),
                              "same": data == request.app[SENT]})


async def _budgeted(request: web.Request) -> web.Response:
    """Both requests hold their reads (widened or not) until both are in."""
    transport: Any = request.transport
    with wide_reads(transport, request.content, budget=ONE_WIDE):
        inside, lent = transport.max_size, ONE_WIDE.lent
        INSIDE[int(request.query["n"])].set()
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in INSIDE)), 20)
        data = await request.content.read()
    return web.json_response({"inside": inside, "lent": lent,
                              "same": data == request.app[SENT]})


async def _plain(request: web.Request) -> web.Response:
    transport: Any = request.transport
    await request.read()
    return web.json_response({"max_size": transport.max_size})


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, bytes]]:
    app = web.Application(client_max_size=4 * BODY)
    app[SENT] = os.urandom(BODY)
    app.router.add_put("/wide", _wide)
    app.router.add_put("/plain", _plain)
    app.router.add_put("/budgeted", _budgeted)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", app[SENT]
    finally:
        await runner.cleanup()


async def test_a_large_body_is_buffered_past_aiohttps_default_pause(
        server: tuple[str, bytes]) -> None:
    url, body = server
    default = asyncio.selector_events._SelectorSocketTransport.max_size  # type: ignore[attr-defined]
    conn = aiohttp.TCPConnector(limit=1)  # one connection: the second request reuses it
    async with aiohttp.ClientSession(connector=conn) as s:
        async with s.put(url + "/wide", data=body) as r:
            got = await r.json()
        async with s.put(url + "/plain", data=b"small") as r:
            plain = await r.json()
    assert got["len"] == BODY and got["same"]
    assert got["inside"] == WIDE_READ_BYTES > default
    assert got["limits"] == [WIDE_READ_BYTES, 2 * WIDE_READ_BYTES]
    assert got["after"] == default
    assert plain["max_size"] == default  # the kept-alive connection reads as before


async def test_bodies_past_the_process_budget_are_read_with_the_defaults(
        server: tuple[str, bytes]) -> None:
    url, body = server
    default = asyncio.selector_events._SelectorSocketTransport.max_size  # type: ignore[attr-defined]
    INSIDE[:] = [asyncio.Event(), asyncio.Event()]
    async with aiohttp.ClientSession() as s:

        async def put(n: int) -> dict[str, Any]:
            async with s.put(f"{url}/budgeted?n={n}", data=body) as r:
                assert r.status == 200
                return await r.json()

        first = await asyncio.gather(put(0), put(1))  # each held in its reads till both are
        INSIDE[:] = [asyncio.Event()]
        alone = await put(0)  # the budget came back: widened again
    sizes = sorted(g["inside"] for g in first)
    assert sizes == [default, WIDE_READ_BYTES]  # one widened, the other on defaults
    assert all(g["same"] for g in first) and alone["same"]
    assert alone["inside"] == WIDE_READ_BYTES and alone["lent"] == 3 * WIDE_READ_BYTES
    assert ONE_WIDE.lent == 0


def test_a_transport_without_a_read_size_keeps_its_own() -> None:
    class Content:
        limits: tuple[int, int] | None = None

        def set_read_chunk_size(self, n: int) -> None:
            self.limits = (n, 2 * n)

    transport = object()  # another event loop's transport: no max_size to widen
    content = Content()
    with wide_reads(transport, content):
        pass
    assert content.limits == (WIDE_READ_BYTES, 2 * WIDE_READ_BYTES)
