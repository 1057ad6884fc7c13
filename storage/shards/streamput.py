"""Streamed shard PUTs of a known length, sent from views over the gateway's own sockets.

Python 3.11's asyncio socket transport sends what the socket takes at once and copies the
rest of the write into its bytearray buffer: on the gateway's shard streams (1 MiB frames,
about half of each taken by the first `send`) that is a user-space copy of most shard bytes
(1.5 per object byte at 4+2), plus aiohttp's request and payload machinery per chunk. Here
the request head, each body chunk and the body MAC trailer go out with `loop.sock_sendall`,
which keeps the unsent rest as a memoryview and sends it when the socket is writable (no
copy), and the small answer is read with `sock_recv`. The request on the wire is the one
aiohttp sent (signed headers, `Content-Length`, trailer MAC); the node cannot tell.

These sockets carry streamed shard PUTs only, so the node's lean front keeps streaming them
(`nodes.leanstream`: a connection it once handed to aiohttp stays aiohttp's). Keep-alive
sockets are pooled per node, each watched while idle (the node's close closes it here, so
none lingers in CLOSE-WAIT); one is reused only while young and still open (peeked). A
stalled node is the caller's to give up on (`shardfeed.ShardSender`'s stall limit cancels
the put, which closes the socket); the answer must come within the read timeout.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import suppress

from storage.config import NodeSpec
from storage.shards.connpool import (
    HEAD_BYTES,
    IDLE_S,
    MAX_IDLE,
    FetchError,
    open_socket,
    parse_head,
)

MAX_ANSWER_BYTES = 64 * 1024  # a PUT's JSON answer (or error) is far smaller


class StreamPutter:
    """Streamed request bodies to nodes over pooled keep-alive sockets of their own."""

    def __init__(self, read_timeout_s: float = 15.0, connect_timeout_s: float = 3.0) -> None:
        self._read_timeout = read_timeout_s
        self._connect_timeout = connect_timeout_s
        self._idle: dict[str, list[tuple[socket.socket, float]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the idle sockets' watcher

    async def put(self, node: NodeSpec, head: bytes,
                  body: AsyncIterator[bytes | memoryview]) -> tuple[int, bytes]:
        """Send `head` (the request line and headers, blank line included), then every
        chunk of `body`, exactly the head's Content-Length bytes; (status, answer body).
        FetchError when the node cannot be reached, closes the connection, answers badly,
        or is silent for the read timeout once the body is sent, and at once when `body`
        runs past the Content-Length (nothing of that chunk is sent) or ends short of it.
        Cancelled or failed: the socket is closed (the node sees a short body and stores
        nothing); it is pooled only after the whole body and a keep-alive answer."""
        left = _content_length(head)
        loop = asyncio.get_running_loop()
        sock = self._take_idle(node) or await open_socket(node, self._connect_timeout)
        keep = False
        try:
            try:
                await loop.sock_sendall(sock, head)
                async for chunk in body:
                    size = chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)
                    if size > left:
                        raise FetchError(node.id, "body longer than its Content-Length")
                    await loop.sock_sendall(sock, chunk)
                    chunk = b""  # sent: not kept while the next one is awaited (budgeted)
                    left -= size
            except OSError as exc:  # the node may have answered, then closed
                got = _answer_now(sock)
                if got is not None:
                    return got
                raise FetchError(node.id, f"{type(exc).__name__}: {exc}") from None
            if left:
                raise FetchError(node.id, f"body {left} bytes short of its Content-Length")
            status, answer, keep = await self._answer(node, sock)
            return status, answer
        finally:
            if keep:
                self._release(node, sock)
            else:
                sock.close()

    async def _answer(self, node: NodeSpec, sock: socket.socket) -> tuple[int, bytes, bool]:
        """(status, body, keep-alive) of the node's answer, read within the read timeout."""
        loop = asyncio.get_running_loop()
        buf = bytearray()
        try:
            async with asyncio.timeout(self._read_timeout):
                while True:
                    got = _parse(buf)
                    if got is not None:
                        return got
                    data = await loop.sock_recv(sock, MAX_ANSWER_BYTES)
                    if not data:
                        raise FetchError(node.id, "connection closed before the answer")
                    buf += data
        except TimeoutError:
            raise FetchError(node.id, f"no answer for {self._read_timeout:.0f}s") from None
        except FetchError as exc:
            raise FetchError(node.id, exc.reason, exc.status) from None
        except OSError as exc:
            raise FetchError(node.id, f"{type(exc).__name__}: {exc}") from None

    def _take_idle(self, node: NodeSpec) -> socket.socket | None:
        """A young idle socket to `node` the node has not closed, or None."""
        idle = self._idle.get(node.address)
        if idle:
            self._drop_aged(idle)
        while idle:
            sock, _ = idle.pop()
            self._unwatch(sock)
            if _still_open(sock):
                return sock
            sock.close()
        return None

    def _release(self, node: NodeSpec, sock: socket.socket) -> None:
        """Keep `sock` for the next put to `node`, watched: the node closing it (or sending
        anything unasked) closes it here at once, so no fd lingers in CLOSE-WAIT."""
        idle = self._idle.setdefault(node.address, [])
        self._drop_aged(idle)
        if len(idle) >= MAX_IDLE:
            sock.close()
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock, self._closed_by_node, idle, sock)
        idle.append((sock, time.monotonic()))

    def _drop_aged(self, idle: list[tuple[socket.socket, float]]) -> None:
        """Close the sockets idle for IDLE_S or more (the bottom of the stack: oldest first)."""
        now = time.monotonic()
        while idle and now - idle[0][1] >= IDLE_S:
            sock, _ = idle.pop(0)
            self._unwatch(sock)
            sock.close()

    def _closed_by_node(self, idle: list[tuple[socket.socket, float]],
                        sock: socket.socket) -> None:
        """An idle socket turned readable (the node closed it): drop and close it."""
        idle[:] = [entry for entry in idle if entry[0] is not sock]
        self._unwatch(sock)
        sock.close()

    def _unwatch(self, sock: socket.socket) -> None:
        if self._loop is not None and sock.fileno() >= 0:
            self._loop.remove_reader(sock)

    def idle(self, node: NodeSpec) -> int:
        """How many idle sockets are kept for `node` (tests look at reuse through it)."""
        return len(self._idle.get(node.address, []))

    def close(self) -> None:
        """Close every idle socket."""
        for socks in self._idle.values():
            for sock, _ in socks:
                with suppress(OSError):
                    self._unwatch(sock)
                    sock.close()
        self._idle.clear()


def _parse(buf: bytearray) -> tuple[int, bytes, bool] | None:
    """The answer in `buf` once whole: (status, body, keep-alive); None while partial.
    FetchError for a bad, chunked, oversized or overlong answer."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) >= HEAD_BYTES:
            raise FetchError("?", "response head too large")
        return None
    head = parse_head(bytes(buf[:end]))
    if head.chunked or head.length is None or head.length > MAX_ANSWER_BYTES:
        raise FetchError("?", "answer without a usable Content-Length")
    have = len(buf) - end - 4
    if have > head.length:
        raise FetchError("?", "more bytes than the Content-Length")
    if have < head.length:
        return None
    return head.status, bytes(buf[end + 4:]), head.keep_alive


def _content_length(head: bytes) -> int:
    """The body length `head` announces (the one Content-Length header it must carry)."""
    for line in head.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError("a streamed PUT's head carries no Content-Length")


def _answer_now(sock: socket.socket) -> tuple[int, bytes] | None:
    """A whole answer the node already sent on a socket we can no longer write to (it
    refused the request and closed), or None."""
    buf = bytearray()
    with suppress(OSError, FetchError):
        while len(buf) < HEAD_BYTES + MAX_ANSWER_BYTES:
            data = sock.recv(MAX_ANSWER_BYTES)
            if not data:
                break
            buf += data
            got = _parse(buf)
            if got is not None:
                return got[0], got[1]
    return None


def _still_open(sock: socket.socket) -> bool:
    """True when the idle socket has neither been closed by the node nor holds bytes."""
    try:
        sock.recv(1, socket.MSG_PEEK)  # b"": closed by the node; a byte: not ours
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False
