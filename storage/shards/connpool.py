"""What the two lean HTTP/1.1 node clients share: keep-alive connections pooled per node,
the response head's parse, and the error they raise.

`storage.shards.fetch` (shard GETs into pooled buffers) and `storage.shards.sender`
(whole-shard PUTs) differ in how they take a body; connecting, reusing, retiring idle
connections and reading a status line and its headers are one mechanism, kept here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from storage.config import NodeSpec
from storage.errors import StorageError

HEAD_BYTES = 8192  # response status line + headers, at most
IDLE_S = 20.0  # idle connections older than this are closed, not reused (nodes keep 75 s)
MAX_IDLE = 16  # idle connections kept per node
MAX_IN_FLIGHT = 64  # requests at once to one node through `slot` (aiohttp's limit_per_host)


class FetchError(StorageError):
    """A node could not be reached, answered badly, or went silent (see `status`)."""

    def __init__(self, node_id: str, reason: str, status: int | None = None,
                 fresh: bool = False) -> None:
        super().__init__(f"node {node_id}: {reason}")
        self.node_id = node_id
        self.reason = reason
        self.status = status
        self.fresh = fresh  # nothing was received: safe to retry on a new connection


@dataclass(frozen=True)
class ResponseHead:
    """A response's status line and the headers the clients act on."""

    status: int
    length: int | None  # Content-Length; None when absent or malformed
    keep_alive: bool  # False for `Connection: close`
    chunked: bool  # a Transfer-Encoding was sent (the node API never does)


def parse_head(head: bytes) -> ResponseHead:
    """Parse `head` (up to, not including, the blank line); FetchError for a bad status line."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise FetchError("?", f"bad status line {lines[0][:80]!r}")
    length, keep_alive, chunked = None, True, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length" and value.isdigit():
            length = int(value)
        elif name == "connection" and value.lower() == "close":
            keep_alive = False
        elif name == "transfer-encoding":
            chunked = True
    return ResponseHead(int(parts[1]), length, keep_alive, chunked)


class NodeConn:
    """One keep-alive connection's state and the asyncio protocol callbacks both clients
    share (mixed in before `asyncio.Protocol` or `asyncio.BufferedProtocol`): one
    request and its answer at a time; `_wake` ends the current `_sleep`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        """State of one exchange (subclasses add theirs)."""
        self.status = 0
        self.keep_alive = True
        self.finished = False  # the whole answer arrived
        self.error: BaseException | None = None
        self.got_any = False  # a byte arrived (else a failure is safe to retry afresh)
        self._waiter: asyncio.Future[None] | None = None

    async def _sleep(self, timeout_s: float) -> None:
        """Until `_wake` (TimeoutError after `timeout_s`). One timer handle that fails the
        waiter, not an `asyncio.timeout` (its context object, task cancel and uncancel
        bookkeeping: one per shard request)."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout_s, expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.finished and self.error is None:
            self.error = FetchError("?", f"connection closed: {exc or 'EOF'}",
                                    fresh=not self.got_any)
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self.keep_alive = False
        self.close()
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)


def expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


C = TypeVar("C", bound=NodeConn)


async def open_socket(node: NodeSpec, timeout_s: float) -> socket.socket:
    """A non-blocking TCP socket connected to `node` within `timeout_s`: every address its
    host resolves to (IPv4 or IPv6, `loop.getaddrinfo`) tried in turn, as
    `loop.create_connection` does; a numeric address is used as it is, with no lookup (the
    lookup runs on the default executor, which a busy gateway may keep waiting past the
    connect timeout). FetchError when none answers."""
    host, _, port = node.address.rpartition(":")
    loop = asyncio.get_running_loop()
    errors: list[str] = []
    try:
        async with asyncio.timeout(timeout_s):
            for family, kind, proto, addr in await _addresses(loop, host.strip("[]"), int(port)):
                try:
                    sock = socket.socket(family, kind, proto)
                except OSError as exc:  # a family this host cannot open (IPv6 disabled)
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                try:
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    await loop.sock_connect(sock, addr)
                    return sock
                except OSError as exc:
                    sock.close()
                    errors.append(f"{type(exc).__name__}: {exc}")
                except BaseException:
                    sock.close()
                    raise
    except (OSError, TimeoutError) as exc:  # the name did not resolve, or too slow
        errors.append(f"{type(exc).__name__}: {exc}")
    raise FetchError(node.id, "; ".join(errors) or f"no address for {host}")


async def _addresses(loop: asyncio.AbstractEventLoop, host: str,
                     port: int) -> list[tuple[int, int, int, tuple[Any, ...]]]:
    """(family, type, proto, sockaddr) to try for host:port: a numeric address directly,
    a name through `loop.getaddrinfo`."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return [(f, k, p, a) for f, k, p, _, a in await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)]
    if ip.version == 6:
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, (host, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, (host, port))]


class ConnPool(Generic[C]):
    """Keep-alive connections per node address: `acquire` reuses a live idle one (and says
    so, for the caller's retry-once rule) or connects; `release` keeps it for the next
    request unless it is closed, not keep-alive, or the node already has `MAX_IDLE`."""

    def __init__(self, factory: Callable[[], C], connect_timeout_s: float,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._factory = factory
        self._connect_timeout = connect_timeout_s
        self._idle: dict[str, list[C]] = {}
        self._max_in_flight = max_in_flight
        self._slots: dict[str, asyncio.Semaphore] = {}

    def slot(self, node: NodeSpec) -> asyncio.Semaphore:
        """Bounds the requests in flight to `node` (and so its connections and concurrent
        fsyncs). Only for requests that never wait on another node's answer while they hold
        it, as a whole-shard PUT: a stream read held while waiting for another node's slot
        could deadlock against a reader holding them the other way round."""
        sem = self._slots.get(node.address)
        if sem is None:
            sem = self._slots[node.address] = asyncio.Semaphore(self._max_in_flight)
        return sem

    def take_idle(self, node: NodeSpec) -> C | None:
        """A live idle connection to `node` (the caller's now), or None."""
        idle = self._idle.get(node.address)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S:
                return conn
            conn.close()
        return None

    async def acquire(self, node: NodeSpec) -> tuple[C, bool]:
        """(connection, reused)."""
        conn = self.take_idle(node)
        if conn is not None:
            return conn, True
        sock = await open_socket(node, self._connect_timeout)
        try:
            _, conn = await asyncio.get_running_loop().create_connection(self._factory,
                                                                         sock=sock)
        except BaseException:
            sock.close()
            raise
        return conn, False

    def release(self, node: NodeSpec, conn: C) -> None:
        idle = self._idle.setdefault(node.address, [])
        if conn.closed or not conn.keep_alive or len(idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def idle(self, node: NodeSpec) -> list[C]:
        """The idle connections kept for `node` (tests look at reuse through it)."""
        return self._idle.get(node.address, [])

    def close(self) -> None:
        """Close every idle connection."""
        for conns in self._idle.values():
            for conn in conns:
                with suppress(Exception):
                    conn.close()
        self._idle.clear()
