"""Whole-shard PUTs over a lean HTTP/1.1 client: the write side of `storage.shards.fetch`.

A shard PUT through a general HTTP client costs the gateway about as much CPU as the node
spends storing a 256 KiB shard (request and response objects, header multidicts, timers,
payload writers, a body task). A one-segment object (up to `segment_size`, 1 MiB by default)
is six such requests, so its shards, whole in memory once encoded, go out here instead: one
`writelines` of the request head, the shard file and its body MAC trailer, then the answer's
head and small JSON body parsed from the bytes received. Same request on the wire as
`NodeClient.put_shard` sends (signed headers, `Content-Length`, trailer MAC), so nodes see
no difference.

Keep-alive connections are pooled per node; a reused connection the node closed before
answering anything is replaced by a new one, once, with a freshly signed request (the node
never accepted the first: a replay of its nonce would be refused).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from storage.config import NodeSpec
from storage.shards.connpool import (
    HEAD_BYTES,
    MAX_IN_FLIGHT,
    ConnPool,
    FetchError,
    NodeConn,
    parse_head,
)

MAX_ANSWER_BYTES = 64 * 1024  # a PUT's JSON answer (or error) is far smaller

# builds the request's pieces (head, body, trailer), or the three as one view
Request = Callable[[], list[bytes | memoryview]]


class _Conn(NodeConn, asyncio.Protocol):
    """One keep-alive connection; carries one request and its answer at a time."""

    def _reset(self) -> None:
        super()._reset()
        self._buf = bytearray()
        self._body_at = -1
        self._length = 0

    @property
    def answer(self) -> bytes:
        return bytes(self._buf[self._body_at:self._body_at + self._length])

    def send(self, pieces: list[bytes | memoryview]) -> None:
        self._reset()
        assert self.transport is not None
        if len(pieces) == 1:  # one view of a `ShardSlot`: no join (writelines copies)
            self.transport.write(pieces[0])
        else:
            self.transport.writelines(pieces)

    async def wait(self, timeout_s: float) -> None:
        """Until the whole answer arrived or the connection failed."""
        if not self.finished and self.error is None:
            await self._sleep(timeout_s)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.got_any = True
        if self.finished:
            self._fail(FetchError("?", "bytes nobody asked for"))
            return
        self._buf += data
        try:
            self._parse()
        except FetchError as exc:
            self._fail(exc)
            return
        if self.finished:
            self._wake()

    # -- internals -------------------------------------------------------------------------

    def _parse(self) -> None:
        if self._body_at < 0:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) >= HEAD_BYTES:
                    raise FetchError("?", "response head too large")
                return
            head = parse_head(bytes(self._buf[:end]))
            if head.chunked:
                raise FetchError("?", "answer without a Content-Length")
            self.keep_alive = head.keep_alive
            length = head.length
            if length is None or length > MAX_ANSWER_BYTES:
                raise FetchError("?", "answer without a usable Content-Length")
            self.status, self._length, self._body_at = head.status, length, end + 4
        have = len(self._buf) - self._body_at
        if have > self._length:
            raise FetchError("?", "more bytes than the Content-Length")
        self.finished = have == self._length


class ShardSender:
    """Whole-body requests to nodes over pooled keep-alive connections."""

    def __init__(self, read_timeout_s: float = 15.0, connect_timeout_s: float = 3.0,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._read_timeout = read_timeout_s
        self._pool: ConnPool[_Conn] = ConnPool(_Conn, connect_timeout_s, max_in_flight)

    async def request(self, node: NodeSpec, build: Request) -> tuple[int, bytes]:
        """Send the request `build()` makes; (status, answer body). FetchError when the
        node cannot be reached, answers badly, or is silent for the read timeout. At most
        `connpool.MAX_IN_FLIGHT` requests to one node at once; the rest queue."""
        async with self._pool.slot(node):
            return await self._request(node, build)

    async def _request(self, node: NodeSpec, build: Request) -> tuple[int, bytes]:
        for attempt in range(2):
            conn, reused = await self._pool.acquire(node)
            done = False
            try:
                conn.send(build())
                try:
                    await conn.wait(self._read_timeout)
                except TimeoutError:
                    raise FetchError(node.id, f"no answer for {self._read_timeout:.0f}s") \
                        from None
                if conn.error is not None:
                    err = conn.error
                    if not isinstance(err, FetchError):  # the sender fails only with these
                        raise err
                    if reused and err.fresh and attempt == 0:
                        continue
                    raise FetchError(node.id, err.reason, err.status, err.fresh) from None
                done = True
                status, answer = conn.status, conn.answer
                self._pool.release(node, conn)
                return status, answer
            finally:
                if not done:
                    conn.close()
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every idle connection."""
        self._pool.close()
