"""Streamed shard PUTs in the node's lean front (`nodes.leanput`): the body of a shard PUT
larger than the front takes whole (a multi-segment object's shard, e.g. 16 MiB of a 64 MiB
object at 4+2) received straight into page-aligned buffers and written from them.

Through aiohttp every body byte was copied twice before the disk saw it (its C parser's
`cb_on_body` into a new `bytes`, then the copy into `DirectAppender`'s aligned buffer:
~14% of a node's samples under a 64 MiB PUT), plus the parser, StreamReader and handler
work per received chunk. Here the transport `recv_into`s the pooled 1 MiB buffers of
`nodes.directio` (`take_buffer`), each full batch of `BATCH_BUFS` goes to the serving task,
which checks its frames (`PutChecks`) and hands it to the writer thread (body MAC, then
O_DIRECT `writev` from the buffers themselves); the next batch is received meanwhile, and
reading pauses while a stream holds `MAX_BUFS` buffers.

What the streamed handler guarantees holds here: the signature, replay window and
watermark are checked (`check_vouched_async`) before anything is written; the length is
capped (`put_target`); the last TRAILER_BYTES of the body (`Content-Length` says where
they start) are never parsed nor written, and the shard is committed (fsync, link,
directory fsync) only when they equal the MAC of every byte before them. A body cut short,
stalled for `KEEPALIVE_S`, or refused part-way is aborted (nothing committed, the temp
file removed) and its connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nodes.directio import BUFFER_BYTES, give_buffer, take_buffer, writes_direct
from nodes.handlers import (
    ApiError,
    NodeState,
    PutChecks,
    RequestStats,
    _disk,
    commit_put,
    put_target,
)
from storage.shards.auth import TRAILER_BYTES
from storage.widereads import WideBudget

if TYPE_CHECKING:
    from nodes.leanput import LeanRequest

BATCH_BUFS = 4  # buffers (MiB) per hand-off to the writer thread: one hop per 4 MiB
MAX_BUFS = 2 * BATCH_BUFS  # per stream: one batch written while the next is received
STREAM_BUDGET = WideBudget(8 * MAX_BUFS * BUFFER_BYTES)  # the process's: 8 streams at once;
# a PUT that finds it spent is streamed by aiohttp instead
LINGER_S = 10.0  # a body refused part-way is read away for at most this (aiohttp's
# lingering time) before the refusal is answered: closing on unread bytes resets the
# connection, and the peer may never see the answer
_SCRAP = bytearray(256 * 1024)  # where the rest of refused bodies is read (and dropped)
Batch = list[tuple[mmap.mmap, int]]  # buffers and how many bytes each holds


class BodyStream:
    """One streamed PUT body as it arrives: the buffers the transport fills (`get_buffer`,
    `received`), the batches the serving task takes (`next_batch`) and gives back
    (`recycle`). Event-loop only."""

    def __init__(self, length: int, pause: Callable[[bool], None], stall_s: float) -> None:
        self.length = length  # the whole body, its MAC trailer included
        self._data = length - TRAILER_BYTES  # > 0: only large bodies are streamed
        self.got = 0
        self.trailer = bytearray(TRAILER_BYTES)
        self._pause = pause  # pause(True) stops the transport's reads, pause(False) resumes
        self._stall_s = stall_s
        self._cur: mmap.mmap | None = None
        self._fill = 0
        self._gathered: Batch = []
        self._batches: deque[Batch] = deque()
        self._held = 0  # buffers taken and not yet given back
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.lost = False  # the connection ended before the body did
        self.closed = False
        self._scrap = False  # refused: the rest is read into _SCRAP and dropped

    @property
    def receiving(self) -> bool:
        """Whether the connection's next bytes are this body's."""
        return not self.closed and not self.lost and self.got < self.length

    def get_buffer(self) -> memoryview:
        if self._scrap:
            return memoryview(_SCRAP)[:min(len(_SCRAP), self.length - self.got)]
        if self.got < self._data:
            if self._cur is None:
                self._cur, self._fill = take_buffer(), 0
                self._held += 1
            end = min(BUFFER_BYTES, self._fill + self._data - self.got)
            return memoryview(self._cur)[self._fill:end]  # never past the data's end
        return memoryview(self.trailer)[self.got - self._data:]

    def received(self, nbytes: int) -> None:
        """`nbytes` arrived in the last `get_buffer`'s view."""
        if self._scrap or self.got >= self._data:
            self.got += nbytes
            if self.got == self.length:
                self._wake()
            return
        self.got += nbytes
        self._fill += nbytes
        if self._fill == BUFFER_BYTES or self.got == self._data:
            assert self._cur is not None
            self._gathered.append((self._cur, self._fill))
            self._cur = None
            if len(self._gathered) == BATCH_BUFS or self.got == self._data:
                self._batches.append(self._gathered)
                self._gathered = []
                self._wake()
            if self._held >= MAX_BUFS and self.got < self._data and not self._paused:
                self._paused = True
                self._pause(True)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes of the body received with its request's head."""
        view = memoryview(data)
        while view and self.receiving:
            buf = self.get_buffer()
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            buf.release()
            view = view[n:]
            self.received(n)

    def connection_lost(self) -> None:
        if self.receiving:
            self.lost = True
            self._wake()

    async def next_batch(self) -> Batch | None:
        """The next batch of data buffers; None once the whole body (trailer too) is in.
        ApiError when the body was cut short or made no progress for `stall_s`."""
        while True:
            if self._batches:
                return self._batches.popleft()
            if self.got == self.length:
                return None
            if self.lost:
                raise ApiError(400, "incomplete_body",
                               f"body not received: {self.got} of {self.length} bytes")
            before = self.got
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, self._stall_s)
            except TimeoutError:
                if self.got == before:
                    raise ApiError(400, "incomplete_body", "body stalled") from None
            finally:
                self._waiter = None

    async def drain(self, limit_s: float) -> None:
        """Read the rest of a refused body away (its buffers given back first), for at most
        `limit_s`, so the refusal reaches the peer rather than a reset."""
        self.close()
        self.closed, self._scrap = False, True
        if self._paused:
            self._paused = False
            self._pause(False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while self.receiving:
            self._waiter = loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, max(0.0, deadline - loop.time()))
            except TimeoutError:
                return
            finally:
                self._waiter = None

    def recycle(self, batch: Batch) -> None:
        """A batch the writer is done with: its buffers back to the pool, reading resumed."""
        for buf, _ in batch:
            give_buffer(buf)
        self._held -= len(batch)
        if self._paused and self._held < MAX_BUFS and not self.closed:
            self._paused = False
            self._pause(False)

    def close(self) -> None:
        """Give back every buffer not in a writer's hands; nothing more is received."""
        self.closed = True
        bufs = [b for batch in self._batches for b, _ in batch]
        bufs += [b for b, _ in self._gathered]
        if self._cur is not None:
            bufs.append(self._cur)
        self._batches.clear()
        self._gathered, self._cur = [], None
        for buf in bufs:
            give_buffer(buf)
        self._held -= len(bufs)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def take_stream() -> bool:
    """Whether the process's stream budget has room for one more streamed PUT (taken
    then; `give_stream` returns it). Without it the PUT goes to aiohttp."""
    return STREAM_BUDGET.take(MAX_BUFS * BUFFER_BYTES)


def give_stream() -> None:
    STREAM_BUDGET.give(MAX_BUFS * BUFFER_BYTES)


async def stream_put(st: NodeState, stats: RequestStats, req: LeanRequest,
                     body: BodyStream) -> dict[str, Any]:
    """Check, write and commit one streamed shard PUT (the streamed handler's checks, in
    its order); the 201 answer's document, or ApiError once the upload is aborted and the
    rest of the body read away (`drain`)."""
    try:
        return await _stream_put(st, stats, req, body)
    except ApiError as exc:
        if exc.code != "incomplete_body":  # a peer gone or stalled is not waited for
            await body.drain(LINGER_S)
        raise


async def _stream_put(st: NodeState, stats: RequestStats, req: LeanRequest,
                      body: BodyStream) -> dict[str, Any]:
    assert req.vouched is not None
    reason = await st.verifier.check_vouched_async(req.vouched)
    if reason is not None:
        raise ApiError(401, "unauthorized", reason)
    target = put_target(st, req.target[len("/v1/shards/"):], req.headers, req.length)
    checks = PutChecks(st, target.stripe, target.index, target.expect)
    writer = await _disk(st.store.begin_put(target.sid))
    writer.digest = st.verifier.body_mac(req.headers)
    writer.direct = writes_direct(req.length)  # around the page cache: nodes.directio
    committed = False
    loop = asyncio.get_running_loop()
    try:
        while (batch := await body.next_batch()) is not None:
            views = [memoryview(buf)[:n] for buf, n in batch]
            try:
                for view in views:
                    checks.feed(view)
                await _disk(loop.run_in_executor(None, writer.write_aligned_sync, views))
            except asyncio.CancelledError:
                raise  # the writer thread may still read the buffers: never pooled again
            except BaseException:
                _release(views)
                body.recycle(batch)
                raise
            _release(views)
            body.recycle(batch)
        stats.bytes_in = body.got
        segments = checks.finish(TRAILER_BYTES)
        head = checks.scanner.header
        writer.warm = head is not None and head.index < head.k  # GETs read data shards
        size = await commit_put(writer, target.sid, [], bytes(body.trailer), target.replace)
        committed = True
    finally:
        stats.bytes_in = body.got
        st.metrics.bytes_in.inc(body.got)
        if not committed:
            await writer.abort()
    st.metrics.shard_writes.inc()
    return {"id": target.sid, "bytes": size, "segments": segments}


def _release(views: list[memoryview]) -> None:
    for view in views:
        with contextlib.suppress(Exception):
            view.release()
