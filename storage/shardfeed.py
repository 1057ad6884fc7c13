"""Feeding one stripe write: the incoming stream cut into segments, and each shard
streamed to its node through a bounded queue (`StripeStore.write` drives both).

A segment is handed on as the chunks it was received in, never joined; a shard's frames go
out as they are coded, at most `QUEUE_FRAMES` waiting per node, and a node that stalls
longer than the write's stall limit is dropped (the write goes on while its quorum holds).
Rebuild and rebalance stream their shards through the same `ShardSender`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from storage.buffers import Lent
from storage.config import NodeSpec
from storage.errors import StorageError
from storage.shards.transport import NodeTransport
from storage.uploadbudget import QUEUED_FRAMES

QUEUE_FRAMES = QUEUED_FRAMES  # per node sender; the upload budget counts them


Pieces = list[bytes | Lent | memoryview]  # one segment as the chunks it came in, in order
Done = Callable[[], None]
_Item = tuple[bytes | memoryview, Done | None]  # a frame and who to tell once it is sent


def holdable(chunk: bytes | Lent | memoryview | bytearray) -> bytes | Lent | memoryview:
    """`chunk` as a piece that may be held until it is coded and hashed: a `bytes` or a
    `Lent` block, or a view of one (an aws-chunked body's data between its framing), as it
    is, since their bytes never change while referred to; anything else (a reusable
    buffer) copied once."""
    if type(chunk) is bytes or type(chunk) is Lent:
        return chunk
    if type(chunk) is memoryview and type(chunk.obj) in (bytes, Lent):
        return chunk
    return bytes(chunk)


async def segments(source: AsyncIterator[bytes], size: int) -> AsyncIterator[tuple[Pieces, bool]]:
    """Re-chunk a byte stream into `size`-byte segments, flagging the last.

    A segment is the list of its pieces: the chunks as they came, split with memoryviews
    where a segment boundary falls inside one, never joined (the encoder encrypts each
    piece into place and the digests take them one by one): no byte of a `bytes` or `Lent`
    chunk (or a view of one) is copied here; any other chunk (a reusable buffer) is copied
    once, since pieces are held until they are coded and hashed (`holdable`). A full
    segment is handed on as soon as one byte past it arrives (or the stream ends), so no
    more than the segment being cut is held here beyond those handed on (the upload budget
    counts a slot per segment).
    """
    parts: Pieces = []
    have = 0
    held: Pieces | None = None  # a full segment that may be the last

    def take() -> Pieces:
        nonlocal have
        out: Pieces = []
        need = size
        while need:
            p = parts[0]
            if len(p) <= need:
                out.append(p)
                need -= len(p)
                parts.pop(0)
            else:
                view = memoryview(p)
                out.append(view[:need])
                parts[0] = view[need:]
                need = 0
        have -= size
        return out

    async for chunk in source:
        if not chunk:
            continue
        chunk = holdable(chunk)
        if held is not None:  # a byte past it came: not the last
            out, held = held, None
            yield out, False
            del out
        parts.append(chunk)
        del chunk
        have += len(parts[-1])
        while have > size:
            yield take(), False
        if have == size:
            held = take()
    if held is not None:
        yield held, True
    elif have:
        yield parts, True


class ShardSender:
    """One streaming PUT of one shard, fed frame by frame through a bounded queue.

    A frame may come with `done`, called once the sender is through with it (written to
    the node's connection, or dropped because the node failed or the write ended): the
    stripe write's upload budget counts a segment's frames until each sender let go."""

    def __init__(self, client: NodeTransport, node: NodeSpec, sid: str, header: bytes,
                 segments: int, stall_s: float, length: int | None = None, *,
                 replace: bool = False) -> None:
        self.node = node
        self._replace = replace  # repair/rebalance: may replace what the node holds
        self.error: str | None = None
        self._q: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=QUEUE_FRAMES)
        self._stall_s = stall_s
        self._header = header
        self._current: Done | None = None  # `done` of the frame the request is sending
        self._ended = False  # the request is over: nothing more is read from the queue
        self._lost = False  # ... and a frame was left in it or sent after it
        self._taken = 0.0  # loop time the request last took a frame (or one was queued)
        self._watch: asyncio.TimerHandle | None = None  # the stall watchdog, while armed
        self._task = asyncio.create_task(self._run(client, sid, segments, length))

    async def _body(self) -> AsyncIterator[bytes | memoryview]:
        while (item := await self._q.get()) is not None:
            self._taken = asyncio.get_running_loop().time()
            frame, self._current = item
            item = None  # nothing here keeps the frame once the request is through with it
            yield frame
            frame = None
            self._let_go()

    def _let_go(self) -> None:
        done, self._current = self._current, None
        if done is not None:
            done()

    async def _run(self, client: NodeTransport, sid: str, segments: int,
                   length: int | None) -> None:
        try:
            await client.put_shard(self.node, sid, self._body(), segments, length,
                                   replace=self._replace)
        except StorageError as exc:
            self.error = str(exc)
        finally:
            self._ended = True
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None
            self._let_go()
            self._drop_queued()

    def _arm(self) -> None:
        """A frame was queued: the stall limit runs while frames wait in the queue and the
        request takes none, whether the queue is full or not, and whether the request is
        sending or still waiting for a connection (its frames are counted meanwhile, and
        the writes they hold up may be the ones holding the connections)."""
        if self._watch is None:
            self._watch = asyncio.get_running_loop().call_at(self._taken + self._stall_s,
                                                             self._check)

    def _check(self) -> None:
        self._watch = None
        if self._q.empty() or self._ended:
            return
        loop = asyncio.get_running_loop()
        due = self._taken + self._stall_s
        if loop.time() < due:  # taken (or queued into an empty queue) meanwhile
            self._watch = loop.call_at(due, self._check)
            return
        if self.error is None:
            self.error = f"node {self.node.id} stalled for {self._stall_s:.0f}s"
        self._task.cancel()  # its end lets every queued frame go

    @property
    def alive(self) -> bool:
        return self.error is None and not (self._task.done() and self._lost)

    async def send(self, frame: bytes | memoryview | None, done: Done | None = None) -> None:
        """Queue `frame` (None: the end) for the node, waiting while its queue is full; a
        node stalled for the stall limit is dropped. `done`: see the class."""
        if self.error is not None or self._ended:
            if frame is not None:
                self._lost = self._lost or self.error is None
            if done is not None:
                done()
            return
        if self._header and frame is not None:
            frame, self._header = self._header + frame, b""  # one write for small shards
        item: _Item | None = None if frame is None else (frame, done)
        frame = None
        try:
            if self._q.empty():  # the oldest queued frame's wait starts now
                self._taken = asyncio.get_running_loop().time()
            self._q.put_nowait(item)
            self._arm()
            return
        except asyncio.QueueFull:
            pass
        put = asyncio.ensure_future(self._q.put(item))
        item = None
        done_, _ = await asyncio.wait({put, self._task}, timeout=self._stall_s,
                                      return_when=asyncio.FIRST_COMPLETED)
        if put not in done_:
            put.cancel()
            if self.error is None:
                self.error = f"node {self.node.id} stalled for {self._stall_s:.0f}s"
            self._task.cancel()
            if done is not None:  # never queued
                done()
        elif self._ended:  # queued as the request ended (its end emptied the queue)
            self._drop_queued()

    def _drop_queued(self) -> None:
        """Frames no request will send (it ended): let them go."""
        while not self._q.empty():
            item = self._q.get_nowait()
            if item is not None:
                self._lost = True
                if item[1] is not None:
                    item[1]()

    async def finish(self) -> bool:
        await self.send(None)
        if self.error is None:
            try:  # asyncio.timeout: wait_for on 3.11 can drop a racing cancellation
                async with asyncio.timeout(self._stall_s):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self.error = f"node {self.node.id} did not confirm within {self._stall_s:.0f}s"
                self._task.cancel()
        return self.error is None

    async def cancel(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


async def read_parts(source: AsyncIterator[bytes], limit: int,
                     ) -> tuple[list[bytes | Lent | memoryview], int, AsyncIterator[bytes] | None]:
    """Up to `limit` bytes of a stream, not joined: the chunks read (bytes), their total
    length, and the rest of the stream (None when it ended within `limit`; else the chunks
    hold more than `limit` bytes)."""
    parts: list[bytes | Lent | memoryview] = []
    have = 0
    async for chunk in source:
        chunk = holdable(chunk)  # held until used
        parts.append(chunk)
        have += len(chunk)
        if have > limit:
            return parts, have, source
    return parts, have, None


async def chain(head: bytes, rest: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    if head:
        yield head
    if rest is not None:
        async for chunk in rest:
            yield chunk
