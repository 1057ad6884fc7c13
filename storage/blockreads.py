"""Reading verified shard blocks of one stripe, segment by segment, from the nodes.

The readers under `StripeStore.read` and `rebuild_shards`: k sources (more with `spare`)
stream their frames at once, each checked by the transport; a source that fails is
replaced by the next from the segment it stopped at, and shards named liars are read last.
Small shards come whole in one batched request per node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from storage.buffers import BufferPool
from storage.config import NodeSpec
from storage.errors import DataUnavailable, StorageError
from storage.shards.format import ShardHeader
from storage.shards.ids import shard_id
from storage.shards.streamslots import StreamSlots
from storage.shards.transport import NodeTransport

Frame = tuple[int, bytes | memoryview, bytearray | None]  # segment, block, pooled owner


class _ShardStream:
    """Reader of one shard's frames (into `pool`'s buffers when given and the transport
    can: `read_frames_into`).

    The request goes out at once: a task fetches the first frame, so the k streams of a
    read start together. Later frames are pulled straight from the transport's generator
    by the consumer: the connection under it reads ahead on its own (the lean fetcher's
    protocol fills up to `MAX_READY` frames, aiohttp its stream buffer), so a task and a
    queue per stream would only add two hops per frame. (The lean fetcher gives its
    connection back to the keep-alive pool as it hands out the last frame.)
    """

    def __init__(self, client: NodeTransport, node: NodeSpec, sid: str, header: ShardHeader,
                 first: int, count: int, pool: BufferPool | None = None) -> None:
        self.node = node
        self.index = header.index
        self._pool = pool if hasattr(client, "read_frames_into") else None
        self._frames: AsyncIterator[tuple[int, bytes | memoryview, bytearray | None]] = (
            client.read_frames_into(  # type: ignore[attr-defined]
                node, sid, header, first, count, self._pool)
            if self._pool is not None else self._unpooled(client, sid, header, first, count))
        self._first: asyncio.Task[Frame] | None = asyncio.create_task(self._pull())

    async def _unpooled(self, client: NodeTransport, sid: str, header: ShardHeader,
                        first: int, count: int) -> AsyncIterator[Frame]:
        frames = client.read_frames(self.node, sid, header, first, count)
        async with contextlib.aclosing(frames):  # closed with this stream, not at GC
            async for seg, block in frames:
                yield seg, block, None

    async def _pull(self) -> Frame:
        try:
            return await anext(self._frames)  # type: ignore[arg-type]
        except StopAsyncIteration:
            raise StorageError(f"node {self.node.id}: shard stream ended early") from None

    async def next(self) -> Frame:
        first, self._first = self._first, None
        if first is not None:
            return await first
        return await self._pull()

    async def close(self) -> None:
        if self._first is not None:
            first, self._first = self._first, None
            first.cancel()
            with contextlib.suppress(BaseException):
                item = await first  # a frame fetched for nobody: its buffer goes back
                if self._pool is not None and item[2] is not None:
                    self._pool.give(item[2])
        with contextlib.suppress(Exception):  # the transport gives back what it holds
            await self._frames.aclose()  # type: ignore[attr-defined]


async def read_small_blocks(client: NodeTransport, headers: Sequence[ShardHeader],
                            sources: Sequence[tuple[int, NodeSpec]], k: int, first: int,
                            last: int,
                            failed: Callable[[int, NodeSpec, StorageError], None] | None = None,
                            spare: int = 0, bulk: int = 0,
                            ) -> AsyncIterator[tuple[int, dict[int, bytes]]]:
    """`read_blocks` for shards of a few KiB: each whole range in one batched request.

    Sources are tried in order, k (+ `spare` when sources allow) at a time; one that fails
    is reported to `failed` and the next source takes its place. DataUnavailable when fewer
    than k can be read. `bulk` (a shard's bytes): read on the transport's repair lane.
    """
    pool = list(sources)
    stripe_id = headers[0].stripe_id
    count = last - first + 1
    got: dict[int, list[tuple[int, bytes]]] = {}
    errors: list[str] = []

    async def one(i: int, node: NodeSpec) -> list[tuple[int, bytes]] | StorageError:
        try:
            if bulk:
                return await client.read_small(node, shard_id(stripe_id, i), headers[i],
                                               first, count, bulk=bulk)
            return await client.read_small(node, shard_id(stripe_id, i), headers[i], first,
                                           count)
        except StorageError as exc:
            return exc

    target = k + spare
    while len(got) < target:
        if len(pool) < k - len(got):
            raise DataUnavailable(
                f"stripe {stripe_id.hex()} segment {first}: fewer than {k} shards "
                f"readable ({'; '.join(errors[-4:])})")
        if not pool:
            break  # k read: a spare is a wish, k is the need
        want = target - len(got)
        batch, pool = pool[:want], pool[want:]
        results = await asyncio.gather(*(one(i, n) for i, n in batch))
        for (i, node), r in zip(batch, results, strict=True):
            if isinstance(r, StorageError):
                errors.append(str(r)[:200])
                if failed is not None:
                    failed(i, node, r)
            else:
                got[i] = r
    for n in range(count):
        yield first + n, {i: frames[n][1] for i, frames in got.items()}


async def read_blocks(client: NodeTransport, headers: Sequence[ShardHeader],
                      sources: Sequence[tuple[int, NodeSpec]], k: int, first: int, last: int,
                      failed: Callable[[int, NodeSpec, StorageError], None] | None = None,
                      exclude: set[int] | None = None, spare: int = 0,
                      pool: BufferPool | None = None,
                      ) -> AsyncIterator[tuple[int, dict[int, bytes | memoryview]]]:
    """For each segment in [first, last], k verified blocks (index -> block).

    Sources (shard index, node) are read in order, k at a time, each as one streaming
    request; one that fails mid-stream is reported to `failed` and replaced by the next
    source from the segment it stopped at. Indexes the caller adds to `exclude` (shards
    found lying) are read only when the others do not suffice, from the next segment on.
    With `spare`, up to k + spare blocks are read when sources allow (repair checks its
    sources agree). DataUnavailable when fewer than k can be read.

    With `pool`, blocks may be views of pooled buffers, valid until the consumer asks for
    the next segment (they are given back then).

    A transport with `stream_slots` bounds the streams open per node: the first ones are
    admitted together, a later one goes at once (`storage.shards.streamslots`).
    """
    owned: list[bytearray] = []  # pooled buffers behind the blocks of the current segment
    waiting = list(sources)
    active: list[_ShardStream] = []
    errors: list[str] = []
    stripe_id = headers[0].stripe_id
    slots: StreamSlots | None = getattr(client, "stream_slots", None)
    admitted: list[NodeSpec] = []  # slots the admission took, not yet given to a stream

    def _open(seg: int) -> bool:
        if not waiting:
            return False
        i, node = waiting.pop(0)
        if admitted:
            admitted.pop(0)  # this stream's (the admission took the first sources' slots)
        elif slots is not None:
            slots.add(node)
        try:
            active.append(_ShardStream(client, node, shard_id(stripe_id, i), headers[i], seg,
                                       last - seg + 1, pool))
        except BaseException:
            if slots is not None:
                slots.give(node)
            raise
        return True

    async def _close(s: _ShardStream) -> None:
        try:
            await s.close()
        finally:
            if slots is not None:
                slots.give(s.node)

    target = k + spare
    if slots is not None:  # the first streams' slots in one step, holding none meanwhile
        admitted = [node for _, node in waiting[:target]]
        await slots.admit(admitted)
    try:
        while len(active) < target and _open(first):
            pass
        for seg in range(first, last + 1):
            if exclude:  # liars go last, not away: lies are per segment, and a shard
                # that lied in one segment may hold an honest block another one needs
                for s in [s for s in active if s.index in exclude]:
                    active.remove(s)
                    await _close(s)
                    waiting.append((s.index, s.node))
                waiting = [p for p in waiting if p[0] not in exclude] + \
                    [p for p in waiting if p[0] in exclude]
            blocks: dict[int, bytes | memoryview] = {}
            while len(blocks) < target:
                pending = [s for s in active if s.index not in blocks]
                while len(pending) + len(blocks) < target:
                    if not _open(seg):
                        if len(pending) + len(blocks) >= k:
                            break  # a spare is a wish, k is the need
                        raise DataUnavailable(
                            f"stripe {stripe_id.hex()} segment {seg}: fewer than {k} shards "
                            f"readable ({'; '.join(errors[-4:])})")
                    pending.append(active[-1])
                if not pending:
                    break
                for s in pending:  # each stream prefetches on its own: no task per await
                    try:
                        r = await s.next()
                    except StorageError as exc:
                        r = exc
                    if isinstance(r, StorageError):
                        errors.append(str(r)[:200])
                        active.remove(s)
                        await _close(s)
                        if failed is not None:
                            failed(s.index, s.node, r)
                    else:
                        blocks[s.index] = r[1]
                        if r[2] is not None:
                            owned.append(r[2])
            yield seg, blocks
            if pool is not None:  # the consumer is done with this segment's blocks
                for buf in owned:
                    pool.give(buf)
            owned.clear()
    finally:
        if slots is not None:  # every slot back before any await: a cancellation that
            for s in active:  # lands in a close below cannot keep one for good
                slots.give(s.node)
            for node in admitted:  # admitted, never opened (a stream failed to start)
                slots.give(node)
            admitted.clear()
        if pool is not None:
            for buf in owned:
                pool.give(buf)
        stop: BaseException | None = None
        for s in active:  # each stream closed even when closing another raised
            try:
                await s.close()
            except BaseException as exc:  # noqa: BLE001 - raised below, after the rest
                stop = stop or exc
        if stop is not None:
            raise stop


__all__ = ["Frame", "read_blocks", "read_small_blocks"]
