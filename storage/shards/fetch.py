"""Shard GETs over a lean HTTP/1.1 client: response bodies received straight into blocks.

A general HTTP client hands out the body as fresh `bytes` chunks, which the frame parser
then copies into blocks. Here the connection is an `asyncio.BufferedProtocol` whose
`get_buffer` is the `FrameAssembler`'s next target, so the kernel's `recv_into` writes each
block where it will be decrypted from: one copy per byte (the kernel's), no allocation per
chunk, no joins. Reading pauses while `MAX_READY` verified frames wait for the consumer.

Only what the node API needs: GET, a Content-Length body, keep-alive connections pooled per
node (a reused connection the node closed meanwhile is retried once on a new one). Any
status other than 200 closes the connection after its head.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from storage.buffers import BufferPool
from storage.config import NodeSpec
from storage.errors import IntegrityError, ShardCorrupt, StorageError
from storage.shards import auth
from storage.shards.assembler import FrameAssembler
from storage.shards.connpool import HEAD_BYTES, ConnPool, FetchError, NodeConn, parse_head
from storage.shards.format import READER_CHECKS, READER_CHECKS_HEADER, ShardHeader

MAX_READY = 3  # verified frames waiting for the consumer before reading pauses
_clock = time.monotonic  # when the last byte arrived (tests give a clock of their own)

__all__ = ["FetchError", "ShardFetcher"]


class _Conn(NodeConn, asyncio.BufferedProtocol):
    """One keep-alive connection; carries one response at a time."""

    def __init__(self) -> None:
        self._head = bytearray(HEAD_BYTES)
        self._scratch = bytearray(4096)  # bytes nobody asked for land here (then: error)
        self._last_byte = 0.0  # _clock() at the last receive
        super().__init__()

    def _reset(self) -> None:
        super()._reset()
        self._head_len = 0
        self._in_body = False
        self._body_left = 0
        self._asm: FrameAssembler | None = None
        self._paused = False

    # -- used by ShardFetcher ------------------------------------------------------------

    def start(self, request: bytes, asm: FrameAssembler) -> None:
        self._reset()
        self._asm = asm
        assert self.transport is not None
        self.transport.write(request)

    async def wait(self, timeout_s: float) -> None:
        """Until something happened: head or frames arrived, the body ended, an error.
        TimeoutError when no byte arrived for `timeout_s` (bytes that complete nothing
        yet do not wake the reader, but they do count as the node being alive: the wait ends
        `timeout_s` after the later of its start and the last byte, never a whole timeout
        more)."""
        if self.error is not None or self.finished or (self._asm and self._asm.ready):
            return
        if self._paused:
            self._resume()
        start = _clock()
        while True:
            left = max(start, self._last_byte) + timeout_s - _clock()
            if left <= 0:
                raise TimeoutError
            try:
                await self._sleep(left)
                return
            except TimeoutError:
                # done in the same loop pass as the deadline: not a timeout
                if self.error is not None or self.finished or (self._asm and self._asm.ready):
                    return

    def taken(self) -> None:
        """The consumer popped frames: read on if reading was paused for it."""
        if self._paused and self._asm is not None and len(self._asm.ready) < MAX_READY:
            self._resume()

    # -- asyncio.BufferedProtocol --------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.finished or self._asm is None:
            return memoryview(self._scratch)  # nothing asked for: an error, reported below
        if not self._in_body:
            if self._head_len < HEAD_BYTES:
                return memoryview(self._head)[self._head_len:]
            return memoryview(self._scratch)
        if self._asm.done:
            return memoryview(self._scratch)  # beyond the frames asked for: an error
        buf = self._asm.buffer()
        return buf[:self._body_left] if len(buf) > self._body_left else buf

    def buffer_updated(self, nbytes: int) -> None:
        self.got_any = True
        self._last_byte = _clock()
        try:
            if self.finished or self._asm is None:
                raise FetchError("?", "bytes nobody asked for")
            if self._in_body:
                self._body(nbytes)
            else:
                self._head_len += nbytes
                self._parse_head()
        except (IntegrityError, FetchError) as exc:
            self._fail(exc)
            return
        # Wake the reader only for what it waits for (the head, a whole frame, the end):
        # a 256 KiB block arrives in a few receives, and each needless wake-up is a task
        # step through the fetcher's generator and a new timeout.
        if self.finished or self._asm.ready or not self._in_body:
            self._wake()

    # -- internals -------------------------------------------------------------------------

    def _parse_head(self) -> None:
        end = self._head.find(b"\r\n\r\n", 0, self._head_len)
        if end < 0:
            if self._head_len >= HEAD_BYTES:
                raise FetchError("?", "response head too large or unasked for")
            return
        head = parse_head(bytes(self._head[:end]))
        self.status, self.keep_alive = head.status, head.keep_alive
        length = None if head.chunked else head.length
        if head.chunked:
            self.keep_alive = False
        if self.status != 200:
            self.keep_alive = False
            self.finished = True
            return
        if length is None:
            raise FetchError("?", "shard response without a Content-Length")
        self._in_body = True
        self._body_left = length
        rest = memoryview(self._head)[end + 4:self._head_len]
        if len(rest) > length:
            raise FetchError("?", "more bytes than the Content-Length")
        if rest:
            assert self._asm is not None
            self._asm.feed(rest)
            self._body_left -= len(rest)
        self._check_end()

    def _body(self, nbytes: int) -> None:
        assert self._asm is not None
        if self._asm.done:
            raise IntegrityError("bytes after the last frame asked for")
        self._body_left -= nbytes
        self._asm.advance(nbytes)
        self._check_end()
        if len(self._asm.ready) >= MAX_READY and not self.finished and self.transport:
            self.transport.pause_reading()
            self._paused = True

    def _check_end(self) -> None:
        if self._body_left == 0:
            self.finished = True
            self._in_body = False

    def _resume(self) -> None:
        self._paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()


class ShardFetcher:
    """Streaming shard reads from nodes into pooled buffers, over pooled connections."""

    def __init__(self, secret: bytes, read_timeout_s: float = 15.0,
                 connect_timeout_s: float = 3.0) -> None:
        self._secret = secret
        self._read_timeout = read_timeout_s
        self._pool: ConnPool[_Conn] = ConnPool(_Conn, connect_timeout_s)

    async def frames(self, node: NodeSpec, sid: str, expect: ShardHeader, first: int,
                     count: int, pool: BufferPool, node_checks: bool = False,
                     ) -> AsyncIterator[tuple[int, memoryview, bytearray]]:
        """Verified (segment, block view, buffer) of frames [first, first+count) of one
        shard; the consumer gives each buffer back to `pool`. ShardCorrupt for a bad or
        foreign header, length or checksum, or a node that reports corruption (409);
        FetchError (with `status` for an HTTP status) for everything else.

        Every frame is checked here (FrameAssembler) before it is offered, so the node is
        told it need not check them too (one pass over the bytes fewer on the node), unless
        `node_checks`. A frame that fails here is then asked for once more with the node
        checking it, so a node whose disk holds the bad frame finds it and quarantines the
        shard, as when it checks every read."""
        path = f"/v1/shards/{sid}?first={first}&count={count}"
        headers = auth.sign(self._secret, "GET", path, node.id, headers=None if node_checks
                            else {READER_CHECKS_HEADER: READER_CHECKS})
        request = (f"GET {path} HTTP/1.1\r\nHost: {node.address}\r\n"
                   + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                   + "\r\n").encode("latin-1")
        asm = FrameAssembler(expect, first, count, pool)
        conn: _Conn | None = None
        try:
            conn = await self._send(node, request, asm)
            while not conn.finished or asm.ready:
                while asm.ready:
                    item = asm.ready.popleft()
                    if not asm.ready and asm.done and conn.finished:
                        # the whole response is in: the connection serves the next read
                        # now, not once a reader asks past the last frame (it may not)
                        self._pool.release(node, conn)
                        conn = None
                        yield item
                        return
                    yield item
                    conn.taken()
                if conn.finished:
                    break
                await self._wait(node, conn)
            if conn.status == 409:
                raise ShardCorrupt(sid, f"node {node.id} reports corruption")
            if conn.status != 200:
                raise FetchError(node.id, f"GET {conn.status}", conn.status)
            if not asm.done:
                raise FetchError(node.id, f"short read: {asm.segment - first} of {count} "
                                          "frames")
            self._pool.release(node, conn)
            conn = None
        except IntegrityError as exc:
            if isinstance(exc, ShardCorrupt):
                raise
            bad = asm.segment if asm.header is not None and not node_checks else None
            if conn is not None:
                conn.close()
                conn = None
            asm.close()
            if bad is not None:
                await self._node_check(node, sid, expect, bad, pool)
            raise ShardCorrupt(sid, f"on {node.id}: {exc}") from None
        finally:
            if conn is not None:
                conn.close()
            asm.close()

    async def _node_check(self, node: NodeSpec, sid: str, expect: ShardHeader, segment: int,
                          pool: BufferPool) -> None:
        """Have the node check frame `segment` itself (a bad one: it quarantines the shard
        and answers 409, raised as ShardCorrupt); any other outcome is left to the caller's
        own error (the frame went bad on the way, or the node cannot say)."""
        try:
            async for _, _, buf in self.frames(node, sid, expect, segment, 1, pool,
                                               node_checks=True):
                pool.give(buf)
        except ShardCorrupt as exc:
            if "reports corruption" in str(exc):
                raise
        except StorageError:
            pass

    async def _wait(self, node: NodeSpec, conn: _Conn) -> None:
        try:
            await conn.wait(self._read_timeout)
        except TimeoutError:
            raise FetchError(node.id, f"no data for {self._read_timeout:.0f}s") from None
        if conn.error is not None:
            err = conn.error
            if isinstance(err, FetchError):
                raise FetchError(node.id, err.reason, err.status, err.fresh) from None
            raise err

    async def _send(self, node: NodeSpec, request: bytes, asm: FrameAssembler) -> _Conn:
        """A connection with the response head received (a reused one that turns out to
        be closed is replaced by a new one, once)."""
        for attempt in range(2):
            conn, reused = await self._pool.acquire(node)
            conn.start(request, asm)
            try:
                while not conn.status and conn.error is None:
                    await self._wait(node, conn)
            except FetchError as exc:
                conn.close()
                if reused and exc.fresh and attempt == 0:
                    continue
                raise
            return conn
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every idle connection."""
        self._pool.close()
