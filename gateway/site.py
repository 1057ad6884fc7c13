"""A TCP site whose connections must send their first request's headers in time.

aiohttp bounds header sizes but puts no deadline on them: a client that opens a connection
and trickles (or never finishes) its request line would hold it forever. Connections that
have not started a request after `header_timeout_s` are closed; idle keep-alive
connections are closed by aiohttp's own keep-alive timeout (set in `gateway.app`).
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

HEADER_TIMEOUT_S = 20.0


def _close_if_no_request(handler: RequestHandler) -> None:
    started = getattr(handler, "_request_count", 1) or getattr(handler, "_current_request", None)
    transport = handler.transport
    if not started and transport is not None and not transport.is_closing():
        transport.close()


class GuardedTCPSite(web.TCPSite):
    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 header_timeout_s: float = HEADER_TIMEOUT_S, backlog: int = 1024,
                 reuse_port: bool = False) -> None:
        super().__init__(runner, host, port, backlog=backlog)
        self._header_timeout_s = header_timeout_s
        self._reuse = reuse_port  # gateway workers: one socket each, the kernel balances

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        factory = self._runner.server
        assert factory is not None

        def make() -> RequestHandler:
            handler = factory()
            loop.call_later(self._header_timeout_s, _close_if_no_request, handler)
            return handler

        self._server = await loop.create_server(make, self._host, self._port,
                                                backlog=self._backlog,
                                                reuse_port=self._reuse or None)
