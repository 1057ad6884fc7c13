"""Sans-I/O receiver of one shard GET body: header + frames, straight into pooled buffers.

The byte source (a socket's `recv_into`, or chunks from an HTTP client) asks `buffer()`
where the next bytes go and reports how many arrived with `advance(n)`; there is no
intermediate buffer to join. Each block lands in its own buffer from a `BufferPool`, is
checked against its frame checksum (seeded with stripe, shard index and segment) when its
last byte arrives, and only then is offered in `ready`. A bad header, length or checksum
raises IntegrityError before any byte of that frame is offered; so do bytes past the last
frame. Chunk boundaries are arbitrary: the result does not depend on them.
"""

from __future__ import annotations

from collections import deque

import crc32c

from storage.buffers import BufferPool
from storage.errors import IntegrityError
from storage.shards.format import FRAME_HEAD, FRAME_HEAD_BYTES, HEADER_BYTES, ShardHeader

_HEADER, _HEAD, _BLOCK, _DONE = range(4)


class FrameAssembler:
    """Parses the body of `GET /v1/shards/{id}?first=&count=` for one expected shard.

    `ready` holds (segment, block view, owning buffer) of verified frames in order; whoever
    pops one gives its buffer back to the pool when done with the view.
    """

    def __init__(self, expect: ShardHeader, first: int, count: int, pool: BufferPool) -> None:
        self.expect = expect
        self.header: ShardHeader | None = None
        self.segment = first
        self.end = first + count
        self.ready: deque[tuple[int, memoryview, bytearray]] = deque()
        self._pool = pool
        self._scratch = bytearray(HEADER_BYTES)
        self._state = _HEADER
        self._want = HEADER_BYTES
        self._filled = 0
        self._crc = 0
        self._block: bytearray | None = None
        self._view = memoryview(self._scratch)

    @property
    def done(self) -> bool:
        """Every frame asked for arrived and verified."""
        return self._state == _DONE

    def buffer(self) -> memoryview:
        """Where the next bytes of the body go: never empty until `done`."""
        if self._state == _DONE:
            raise IntegrityError(f"segment {self.end}: bytes after the last frame asked for")
        return self._view[self._filled:self._want]

    def advance(self, n: int) -> None:
        """`n` bytes were written at the start of the last `buffer()`."""
        self._filled += n
        if self._filled < self._want:
            return
        if self._state == _HEADER:
            self._check_header()
        elif self._state == _HEAD:
            self._start_block()
        elif self._state == _BLOCK:
            self._finish_block()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Copy `data` through `buffer()`/`advance()` (for sources that hand out chunks)."""
        view = memoryview(data).cast("B")
        while view:
            dst = self.buffer()
            n = min(len(dst), len(view))
            dst[:n] = view[:n]
            view = view[n:]
            self.advance(n)

    def close(self) -> None:
        """Give back every buffer still held (frames not popped and a partial block)."""
        if self._block is not None:
            self._pool.give(self._block)
            self._block = None
        while self.ready:
            self._pool.give(self.ready.popleft()[2])
        self._state = _DONE

    def _expect_head(self) -> None:
        self._state, self._want, self._filled = _HEAD, FRAME_HEAD_BYTES, 0
        self._view = memoryview(self._scratch)
        if self.segment >= self.end:
            self._state = _DONE

    def _check_header(self) -> None:
        h = ShardHeader.unpack(bytes(self._scratch))
        e = self.expect
        if h.stripe_id != e.stripe_id or h.index != e.index:
            raise IntegrityError("header names another shard")
        if (h.k, h.m, h.block_size) != (e.k, e.m, e.block_size):
            raise IntegrityError("header has another layout than the stripe's")
        self.header = h
        self._expect_head()

    def _start_block(self) -> None:
        assert self.header is not None
        length, self._crc = FRAME_HEAD.unpack_from(self._scratch)
        if length > self.header.block_size or length == 0:
            raise IntegrityError(f"frame {self.segment} has bad length {length}")
        self._block = self._pool.take(self.header.block_size)
        self._view = memoryview(self._block)[:length]
        self._state, self._want, self._filled = _BLOCK, length, 0

    def _finish_block(self) -> None:
        assert self.header is not None and self._block is not None
        block, view, self._block = self._block, self._view, None
        if crc32c.crc32c(view, self.header.seed(self.segment)) != self._crc:
            self._pool.give(block)
            raise IntegrityError(f"segment {self.segment} of shard {self.header.index}: "
                                 "checksum mismatch")
        self.ready.append((self.segment, view, block))
        self.segment += 1
        self._expect_head()
