"""A TCP site whose connections must send each request's headers in time and within size.

aiohttp bounds header lines but puts no deadline on them nor a cap on their sum: a client
that opens a connection and trickles (or never finishes) its request line would hold it
forever. Every connection's handler (`storage.headguard.CappedHandler`) closes it when a
head is not complete `header_timeout_s` after it began (after the connection opened, for
the first) and refuses heads over `max_header_bytes` with the listener's own answer
(`refusal`: S3's XML, the admin API's JSON) and answers heads aiohttp's parser refuses
the same way (`malformed`); idle keep-alive connections are closed
by aiohttp's own keep-alive timeout (set in `gateway.app`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.balance import BalancedAccept, ConnSlots
from storage.headguard import Malformed, capped_handler, plain_malformed

HEADER_TIMEOUT_S = 20.0
MAX_HEADER_BYTES = 16 * 1024  # [gateway] max_header_bytes' default
BACKLOG = 1024


class GuardedTCPSite(web.TCPSite):
    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 header_timeout_s: float = HEADER_TIMEOUT_S,
                 max_header_bytes: int = MAX_HEADER_BYTES,
                 refusal: Callable[[int], bytes], malformed: Malformed = plain_malformed,
                 backlog: int = BACKLOG) -> None:
        super().__init__(runner, host, port, backlog=backlog)
        self._header_timeout_s = header_timeout_s
        self._max_header_bytes = max_header_bytes
        self._refusal = refusal  # the cap -> the listener's own answer refusing a head
        self._malformed = malformed  # its answer to a head the parser refuses

    def _guarded(self) -> Callable[[], RequestHandler]:
        """The runner's handler factory: handlers holding heads to size and time."""
        factory = self._runner.server
        assert factory is not None

        def make() -> RequestHandler:
            return capped_handler(factory, self._header_timeout_s, self._max_header_bytes,
                                  lambda: self._refusal(self._max_header_bytes),
                                  self._malformed)

        return make

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._guarded(), self._host, self._port,
                                                backlog=self._backlog)


class BalancedTCPSite(GuardedTCPSite):
    """A guarded site on the listening sockets every gateway worker shares (one per address),
    accepting only while it is this worker's turn (`gateway.balance`)."""

    def __init__(self, runner: web.BaseRunner, socks: list[socket.socket], slots: ConnSlots,
                 *, header_timeout_s: float = HEADER_TIMEOUT_S,
                 max_header_bytes: int = MAX_HEADER_BYTES, refusal: Callable[[int], bytes],
                 malformed: Malformed = plain_malformed, grace_s: float = 0.25) -> None:
        host, port = socks[0].getsockname()[:2]
        super().__init__(runner, host, port, header_timeout_s=header_timeout_s,
                         max_header_bytes=max_header_bytes, refusal=refusal,
                         malformed=malformed)
        self._socks = socks
        self._slots = slots
        self._grace_s = grace_s

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert isinstance(server, web.Server)
        factory = self._guarded()
        accepts = [BalancedAccept(sock, self._slots, factory, self._grace_s, self._backlog)
                   for sock in self._socks]  # one count of open connections for them all
        forget = server.connection_lost

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            forget(handler, exc)
            for accept in accepts:
                accept.lost(handler)

        server.connection_lost = connection_lost  # type: ignore[method-assign]
        self._server = _Accepts(accepts)  # type: ignore[assignment]


class _Accepts:
    """The balanced accepts of one site, stopped together (what `BaseSite.stop` closes)."""

    def __init__(self, accepts: list[BalancedAccept]) -> None:
        self._accepts = accepts

    def close(self) -> None:
        for accept in self._accepts:
            accept.close()

    async def wait_closed(self) -> None:
        return None
