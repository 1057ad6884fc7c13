"""Moving one stripe (all segments of one part) to and from the nodes that hold its shards.

Writes stream every shard to its node in one request while segments are encoded on a
thread pool, with bounded queues so memory stays flat whatever the size; a node that fails
or stalls is dropped and the write continues as long as the write quorum still holds; the
shard it did not take then goes to a spare node before the write is acknowledged
(`storage/spares.py`), so an acknowledged stripe holds k+m shards whenever k+m nodes can
take them.
Reads pull k shards (data shards first, so decoding is a join), replace a failing shard
with another one mid-stream, and never return a segment whose GCM tag does not verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from storage.blockreads import read_blocks, read_small_blocks
from storage.buffers import BufferPool, IdleTrim
from storage.config import Config, NodeSpec, Profile
from storage.crypto.aead import TAG_BYTES
from storage.errors import IntegrityError, Overloaded, QuorumNotReached, StorageError
from storage.fullness import refused_for_space, shard_need
from storage.health import HealthTracker
from storage.lying import LyingShards
from storage.pipeline import (
    FRAME_BUFFERS,
    StripeCodec,
    segment_count,
    segment_length,
    shard_file_bytes,
)
from storage.placement import place_for_write
from storage.shardfeed import QUEUE_FRAMES, Pieces
from storage.shardfeed import ShardSender as _ShardSender  # rebuild, rebalance import it here
from storage.shardfeed import chain as _chain
from storage.shardfeed import read_parts as _read_parts
from storage.shardfeed import segments as _segments
from storage.shards.client import SMALL_SHARD_BYTES
from storage.shards.connpool import MAX_IN_FLIGHT
from storage.shards.ids import shard_id
from storage.shards.slot import ShardSlot
from storage.shards.transport import NodeTransport
from storage.spares import Resend, Spares
from storage.telemetry import STAGES, stage
from storage.uploadbudget import (
    RECEIVE_BYTES,
    UPLOAD_WAIT_S,
    WRITE_SLOTS,
    UploadBudget,
    frame_set_bytes,
    largest_frame_set,
    largest_write,
    segment_bytes,
    worker_share,
    write_footprint,
)
from storage.writehold import Users, WriteHold

# unknown-length writes at once per process: their chunked shard PUTs share aiohttp's
# per-node connections (`storage.cluster`'s connector, limit_per_host=MAX_IN_FLIGHT)
CHUNKED_WRITES = MAX_IN_FLIGHT

POOL_BYTES = 48 * 1024 * 1024  # free read buffers kept per gateway process at most
HASH_LAG_BYTES = 4 * 1024 * 1024  # how far the digests may fall behind the coding
# the kept frame buffers (storage.pipeline.FRAME_BUFFERS) are let go once no streaming write
# ran in this process for this long: back-to-back writes keep them (a client's next request
# comes within milliseconds), while a GET burst after the writes does not find up to
# FRAME_POOL_BYTES per process still resident (2 s of it put 64 MiB PUT-then-GET peaks at
# 311-317 MiB of the 300 MiB aim, gateway_memory.py)
FRAME_IDLE_S = 0.25
FRAME_TRIM = IdleTrim(FRAME_BUFFERS.trim, FRAME_IDLE_S)
DamageReport = Callable[[bytes, int, str], None]
# the write feed lives in storage/shardfeed.py; these names are re-exported from here
__all__ = ["POOL_BYTES", "QUEUE_FRAMES", "StripeStore", "WriteResult", "_ShardSender"]


@dataclass
class WriteResult:
    size: int
    segments: int
    nodes: list[str | None]


class StripeStore:
    def __init__(self, cfg: Config, client: NodeTransport, health: HealthTracker,
                 cpu: Executor, hashing: Executor, stall_s: float = 20.0,
                 lies: LyingShards | None = None, workers: int = 1) -> None:
        self._cfg = cfg
        self.lies = lies or LyingShards(None, client)  # where lying shards are reported
        self._client = client
        self._health = health
        self._cpu = cpu
        self._hashing = hashing
        self._stall_s = stall_s
        self.pool = BufferPool(POOL_BYTES)  # frames and segments of borrowing reads
        # what all of this process's writes may hold at once (segments, frames in flight):
        # its share of the gateway's setting when it is one of `workers` gateway processes
        self.uploads = UploadBudget(worker_share(cfg.gateway.upload_budget_bytes, workers,
                                                 largest_write(cfg)),
                                    reserve=largest_frame_set(cfg))
        # unknown-length writes running at once: each holds one of aiohttp's connections
        # per node for its whole body (chunked shard PUTs, at most `CHUNKED_WRITES` per
        # node); with no more of them than that, none of their senders waits for a
        # connection that another such write holds while it waits for frame room (which
        # that sender's queued frames hold): review15c's cycle
        self._chunked = asyncio.Semaphore(CHUNKED_WRITES)
        # where the shards a write's first targets did not take go before the ack
        self.spares = Spares(cfg, client, health, cpu, stall_s, self.pool, self.delete)

    @property
    def transport(self) -> NodeTransport:
        """The node transport shards go through."""
        return self._client

    def cluster_nodes(self) -> tuple[NodeSpec, ...]:
        """The live cluster map (config nodes merged with the membership overlay)."""
        return self._health.nodes

    @property
    def health(self) -> HealthTracker:
        """The live cluster map: commits compare its nodes' membership records."""
        return self._health

    def _nodes_by_id(self) -> dict[str, NodeSpec]:
        return {n.id: n for n in self._health.nodes}  # the live cluster map (membership)

    async def write(self, codec: StripeCodec, profile: Profile, source: AsyncIterator[bytes],
                    digests: Sequence[object] = (), size_hint: int | None = None,
                    ) -> WriteResult:
        """Encode and store a stream as one stripe; returns once the write quorum holds.

        The stream is plaintext, or sealed segments for a codec without a cipher; the
        result's `size` counts plaintext bytes either way. The write is admitted once the
        least it needs fits in the process's upload budget (waiting its turn before reading
        a byte of `source`), then counts each segment it holds against it
        (`storage/writehold.py`): no write waits on the budget holding part of it.
        """
        segs = -1 if size_hint is None else segment_count(size_hint, codec.segment_size)
        hold = self._hold(codec, profile, segs, size_hint)
        chunked, wait_s = size_hint is None, UPLOAD_WAIT_S.get()
        if chunked:
            wait_s = await self._chunked_turn(wait_s)
        try:
            await hold.admit(wait_s)
            try:
                return await self._write(codec, profile, source, digests, size_hint, hold)
            finally:
                hold.close()
        finally:
            if chunked:
                self._chunked.release()

    async def _chunked_turn(self, wait_s: float | None) -> float | None:
        """One of the `CHUNKED_WRITES` turns, in line, at most `wait_s` (then `Overloaded`,
        as the budget refuses a wait that long); what is left of `wait_s`."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            async with asyncio.timeout(wait_s):
                await self._chunked.acquire()
        except TimeoutError:
            self.uploads.refused += 1
            raise Overloaded("the gateway's unknown-length uploads are all taken by other "
                             "uploads for too long; retry later") from None
        return None if wait_s is None else max(0.0, wait_s - (loop.time() - start))

    def _hold(self, codec: StripeCodec, profile: Profile, segs: int,
              size_hint: int | None) -> WriteHold:
        """A write's share of the upload budget: a one-segment write's body and frames as
        one slot; a streaming write's receive buffers and one slot per segment being cut
        or coded (its frames are counted apart, `WriteHold.take_frames`)."""
        k, width = codec.codec.k, profile.width
        if segs == 1:
            return WriteHold(self.uploads, 0, write_footprint(codec.input_segment, 1, k,
                                                              width, size_hint), 1)
        slots = WRITE_SLOTS if segs < 0 else min(WRITE_SLOTS, segs)
        return WriteHold(self.uploads, RECEIVE_BYTES, segment_bytes(codec.input_segment), slots)

    async def _write(self, codec: StripeCodec, profile: Profile, source: AsyncIterator[bytes],
                     digests: Sequence[object], size_hint: int | None,
                     hold: WriteHold) -> WriteResult:
        loop = asyncio.get_running_loop()
        quorum = self._cfg.write_quorum(profile)
        targets = place_for_write(codec.stripe_id, profile, self._health.placeable())
        if len(targets) < quorum:
            full = await refused_for_space(self._health, profile.role, quorum,
                                           shard_need(codec, size_hint))
            raise QuorumNotReached(quorum, len(targets), profile.width,
                                   ["not enough healthy nodes to place the stripe"], full=full)
        headers = codec.headers()
        segs = -1 if size_hint is None else segment_count(size_hint, codec.segment_size)
        length = None if size_hint is None else shard_file_bytes(size_hint, codec.segment_size,
                                                                codec.codec.k)
        if segs == 1 and length is not None:
            parts, have, rest = await _read_parts(source, codec.input_segment)
            if rest is None and have == size_hint:
                if length <= SMALL_SHARD_BYTES:
                    return await self._write_small(codec, profile, targets, quorum,
                                                   b"".join(parts), digests)
                return await self._write_whole(codec, profile, targets, quorum, parts, have,
                                               digests)
            # not what was announced: the streaming path decides
            source = _chain(b"".join(parts), rest)
        senders: list[_ShardSender] | None = None
        total = 0
        count = 0
        sends: deque[asyncio.Task[None]] = deque()  # frames to the senders, in order
        coding: set[asyncio.Future[list[bytes | memoryview]]] = set()  # jobs on the pool
        frame_set = frame_set_bytes(codec.input_segment, codec.codec.k, profile.width)
        hashes: deque[asyncio.Task[None]] = deque()  # digest jobs not yet awaited, in order
        feeding: set[asyncio.Future[None]] = set()  # their threads on the hashing pool
        lag = max(2, HASH_LAG_BYTES // codec.segment_size)  # segments: 4 of 1 MiB, 2 of 4 MiB

        def _feed(data: Pieces) -> None:
            with STAGES.time("hash"):
                for d in digests:
                    for piece in data:
                        d.update(piece)  # type: ignore[attr-defined]

        async def _hash_after(prev: asyncio.Task[None] | None, data: Pieces,
                              slot: Users) -> None:
            """Feed one segment to the digests once the segment before it was fed: MD5 is
            serial per object, so it runs beside the coding (its own pool), not after it."""
            job = None
            try:
                if prev is not None:
                    await prev
                job = loop.run_in_executor(self._hashing, _feed, data)
                feeding.add(job)
                job.add_done_callback(feeding.discard)
                job.add_done_callback(lambda _: slot.drop())  # fed: let go
                await asyncio.shield(job)  # cancelled: the thread feeds on (waited for)
            finally:
                del data
                if job is None:
                    slot.drop()

        async def _send(prev: asyncio.Task[None] | None,
                        job: asyncio.Future[list[bytes | memoryview]], users: Users) -> None:
            """One segment's frames to the senders as soon as it is coded (after the
            segment before it: frames go out in order); their room in the budget is given
            back once every sender is through with its frame."""
            assert senders is not None
            try:
                if prev is not None:
                    await prev
                frames = await asyncio.shield(job)  # a cancelled send leaves the coding be
                del job
                users.add(min(len(senders), len(frames)))
                with STAGES.time("shard_write"):
                    await asyncio.gather(*(s.send(f, users.drop) for s, f in zip(
                        senders, frames, strict=False)))
                del frames
            finally:
                users.drop()
            alive = sum(s.alive for s in senders)
            if alive < quorum:
                raise QuorumNotReached(quorum, alive, profile.width,
                                       [s.error for s in senders if s.error])

        pieces = _segments(source, codec.input_segment)
        FRAME_TRIM.begin()
        try:
            while True:
                await hold.take()  # a slot (own, or one the budget spares) before reading
                try:
                    data, last = await anext(pieces)
                except StopAsyncIteration:
                    hold.free()  # taken for a segment that never came
                    break
                if senders is None:
                    senders = [
                        _ShardSender(self._client, node,
                                     shard_id(codec.stripe_id, i), headers[i].pack(),
                                     segs, self._stall_s, length)
                        for i, node in enumerate(targets)
                    ]
                slot = Users(1 + bool(digests), hold.free)  # the coding's, the digests'
                give_back = (hold.try_frames(frame_set)  # else once other frames are sent
                             or await hold.take_frames(frame_set))
                job = loop.run_in_executor(self._cpu, codec.encode_frames, headers, count,
                                           last, data)
                coding.add(job)
                job.add_done_callback(coding.discard)
                job.add_done_callback(lambda _, slot=slot: slot.drop())  # coded: let go
                sends.append(asyncio.ensure_future(
                    _send(sends[-1] if sends else None, job, Users(1, give_back))))
                del job
                if digests:
                    hashes.append(asyncio.ensure_future(
                        _hash_after(hashes[-1] if hashes else None, data, slot)))
                    while len(hashes) > lag:  # bound the segments held for hashing
                        await hashes.popleft()
                total += sum(map(len, data)) - (codec.input_segment - codec.segment_size)
                count += 1
                del data, slot  # the coding and digests hold the segment, not this loop
                while sends and sends[0].done():
                    await sends.popleft()  # a failed one raises here
            while sends:
                await sends.popleft()
            while hashes:
                await hashes.popleft()
            if senders is None:
                return WriteResult(size=0, segments=0, nodes=[])
            with STAGES.time("shard_write"):
                oks = await asyncio.gather(*(s.finish() for s in senders))
        except BaseException as exc:
            for t in (*sends, *hashes):
                t.cancel()
            await asyncio.gather(*sends, *hashes, return_exceptions=True)
            failed = [s.node.id for s in senders or [] if s.error is not None]
            for s in senders or []:
                if s.error is not None:  # so a retry's placement avoids the failed node
                    self._health.report_failure(s.node.id, s.error)
                await s.cancel()
            if coding or feeding:  # a coding or hashing thread holds its segment: wait
                await asyncio.wait([*coding, *feeding])
            if failed and isinstance(exc, QuorumNotReached):
                await self._health.confirm(failed)  # settled before the client retries
                exc.full = await refused_for_space(  # the refusal's cause, as `settle`'s
                    self._health, profile.role, quorum, shard_need(codec, size_hint or total),
                    [s.node.id for s in senders or [] if s.error is None])
            raise
        finally:
            FRAME_TRIM.end()
        nodes = await self.spares.settle(codec, profile, quorum,
                                         [(s.node, None if ok else (s.error or "failed"))
                                          for s, ok in zip(senders, oks, strict=True)],
                                         self.spares.rebuilder(codec, total),
                                         shard_need(codec, total))
        return WriteResult(size=total, segments=count, nodes=nodes)

    async def _write_small(self, codec: StripeCodec, profile: Profile,
                           targets: Sequence[NodeSpec], quorum: int, data: bytes,
                           digests: Sequence[object]) -> WriteResult:
        """A one-segment stripe of a few KiB: digests and codec run inline (a thread hop
        costs more than the work), and each whole shard goes to its node in a batch request
        shared with other small writes to that node. Same quorum rules as `write`."""
        if digests:
            with STAGES.time("hash"):
                for d in digests:
                    d.update(data)  # type: ignore[attr-defined]
        headers = codec.headers()
        frames = codec.encode(headers, 0, True, data)
        shards = [h.pack() + f for h, f in zip(headers, frames, strict=True)]
        errors = await self._put_whole(self._client.put_small, codec,
                                       list(enumerate(targets)), shards)
        nodes = await self.spares.settle(codec, profile, quorum,
                                         list(zip(targets, errors, strict=True)),
                                         self._resender(self._client.put_small, codec, shards),
                                         len(shards[0]))
        return WriteResult(size=len(data), segments=1, nodes=nodes)

    def _resender(self, put: Callable[..., Awaitable[object]], codec: StripeCodec,
                  shards: Sequence[bytes | ShardSlot]) -> Resend:
        """A one-segment stripe's resend: its whole shards are still in memory, so a missing
        one goes to its spare as it went to its first target (`put`)."""
        async def resend(targets: dict[int, NodeSpec],
                         _nodes: list[str | None]) -> dict[int, str | None]:
            pairs = list(targets.items())
            errors = await self._put_whole(put, codec, pairs, shards)
            return {i: e for (i, _), e in zip(pairs, errors, strict=True)}
        return resend

    async def _put_whole(self, put: Callable[..., Awaitable[object]], codec: StripeCodec,
                         targets: Sequence[tuple[int, NodeSpec]],
                         shards: Sequence[bytes | ShardSlot]) -> list[str | None]:
        """Each whole shard file (header + its one frame) to its node through `put`
        (`put_small`: batched; `put_shard`: one request); `targets` (shard index, node);
        per target, None or the error."""
        async def one(i: int, node: NodeSpec) -> str | None:
            try:
                async with asyncio.timeout(self._stall_s):  # no extra task, unlike wait_for
                    await put(node, shard_id(codec.stripe_id, i), shards[i], 1)
            except StorageError as exc:
                return str(exc)
            except TimeoutError:
                return f"node {node.id} did not confirm within {self._stall_s:.0f}s"
            return None

        with STAGES.time("shard_write"):
            return list(await asyncio.gather(*(one(i, n) for i, n in targets)))

    async def _write_whole(self, codec: StripeCodec, profile: Profile,
                           targets: Sequence[NodeSpec], quorum: int, parts: list[bytes],
                           have: int, digests: Sequence[object]) -> WriteResult:
        """A one-segment stripe too large to batch (a 1 MiB object): the segment is coded
        in one pool job with its digests (`encode_slots`: sealed and coded in place in one
        buffer, about a fifth of `encode`'s CPU, which copies the segment three times and
        zero-fills its parity; one thread hop per object, not one per stage), then each
        whole shard goes to its node in one request (`put_shard` of bytes: the lean sender, no body task, queue or
        chunk stream per shard). The body is never joined: `parts` (chunks as received) are
        sealed into place and each shard goes out in one write from its `ShardSlot`, with
        its request's head and trailer in the room kept around it. Same quorum rules as
        `write`."""
        loop = asyncio.get_running_loop()
        headers = codec.headers()

        def _code() -> list[ShardSlot]:
            slots = codec.encode_slots(headers, parts)
            with STAGES.time("hash"):
                for d in digests:
                    for p in parts:
                        d.update(p)  # type: ignore[attr-defined]
            return slots

        slots = await loop.run_in_executor(self._cpu, _code)
        put_shards = getattr(self._client, "put_shards", None)  # simulated nodes: one each
        if put_shards is None:
            errors = await self._put_whole(self._client.put_shard, codec,
                                           list(enumerate(targets)), slots)
        else:
            with STAGES.time("shard_write"):
                errors = await put_shards([(n, shard_id(codec.stripe_id, i), slots[i])
                                           for i, n in enumerate(targets)], self._stall_s)
        total = have - (codec.input_segment - codec.segment_size)
        nodes = await self.spares.settle(codec, profile, quorum,
                                         list(zip(targets, errors, strict=True)),
                                         self._resender(self._client.put_shard, codec, slots),
                                         shard_need(codec, total))
        return WriteResult(size=total, segments=1, nodes=nodes)

    async def read(self, codec: StripeCodec, nodes: Sequence[str | None], size: int,
                   first: int, last: int, on_damage: DamageReport | None = None,
                   borrowed: bool = False) -> AsyncIterator[bytes | memoryview]:
        """Yield the plaintext of segments [first, last] of a stripe of `size` bytes (the
        sealed segments for a codec without a cipher).

        A segment whose GCM tag fails is recovered from other shards (`_recover`) and the
        shards that lied are reported and left out of the rest of the read.

        `borrowed`: the consumer is done with each chunk before it asks for the next one
        (and the transport holds no reference to it by then): frames are received into
        pooled buffers and segments decrypted into them without a join.
        """
        loop = asyncio.get_running_loop()
        by_id = self._nodes_by_id()
        nsegs = segment_count(size, codec.segment_size)
        placed = [(i, by_id[n]) for i, n in enumerate(nodes) if n is not None and n in by_id]
        usable = [p for p in placed if self._health.is_usable(p[1].id)]
        sources = usable + [p for p in placed if p not in usable]  # down ones last
        liars: set[int] = set()

        def failed(index: int, node: NodeSpec, exc: StorageError) -> None:
            if not isinstance(exc, IntegrityError) and getattr(exc, "status", None) not in (
                    404, 409, 416):
                self._health.report_failure(node.id, str(exc))
            if on_damage:
                on_damage(codec.stripe_id, index, str(exc))

        small = shard_file_bytes(size, codec.segment_size, codec.codec.k) <= SMALL_SHARD_BYTES
        keyless = codec.cipher is None  # no tag to check: k+1 blocks must agree instead
        # A borrowing consumer of keyed, streamed shards: blocks land in pooled buffers and
        # a segment whose k data blocks are all there is decrypted from them into a pooled
        # output buffer on the loop (no join, no thread hop, no fresh pages); the buffers
        # are given back when the consumer asks for the next segment. Any other case (a
        # parity block needed, a tag that fails) takes the general path for that segment.
        pool = self.pool if borrowed and not small and not keyless else None
        out: bytearray | None = None
        if small:
            blocks_of = read_small_blocks(self._client, codec.headers(), sources, codec.codec.k,
                                          first, last, failed)
        else:
            blocks_of = read_blocks(self._client, codec.headers(), sources, codec.codec.k,
                                    first, last, failed, liars, spare=int(keyless), pool=pool)
        try:
            # aclosing: a reader that stops early (a client hung up) cancels the shard
            # streams now
            async with contextlib.aclosing(blocks_of):
                waited = time.perf_counter()
                async for seg, blocks in blocks_of:
                    stage("shard_read", time.perf_counter() - waited)
                    plen = segment_length(size, codec.segment_size, seg)
                    end = seg == nsegs - 1
                    plain: bytes | memoryview | None = None
                    try:
                        if keyless:
                            plain = await self._sealed(codec, sources, seg, end, plen, blocks,
                                                       liars, small)
                        else:
                            if pool is not None:
                                if out is None:
                                    out = pool.take(codec.segment_size + 2 * TAG_BYTES)
                                plain = codec.open_into(seg, end, plen, blocks, out)
                            if plain is None and small:  # a hop costs more than a few KiB
                                plain = codec.decode(seg, end, plen, blocks)
                            elif plain is None:
                                plain = await loop.run_in_executor(
                                    self._cpu, codec.decode, seg, end, plen, dict(blocks))
                    except IntegrityError:
                        if keyless:
                            raise
                        plain = await self._recover(codec, sources, seg, end, plen,
                                                    {i: bytes(b) for i, b in blocks.items()},
                                                    liars, small)
                    yield plain
                    waited = time.perf_counter()  # time the consumer held us is not shard I/O
        finally:
            if out is not None and pool is not None:
                pool.give(out)

    async def _sealed(self, codec: StripeCodec, sources: Sequence[tuple[int, NodeSpec]],
                      seg: int, last: bool, plen: int, blocks: dict[int, bytes],
                      liars: set[int], small: bool) -> bytes:
        """A sealed segment read without its key (re-coding SSE-C data): there is no tag to
        check, so it is returned only when its k+1 blocks agree; otherwise every block is
        read and the codeword k+1 of them agree on wins (`StripeCodec.audit`), its liars
        reported; IntegrityError when none has that support (never copy a lie onward)."""
        loop = asyncio.get_running_loop()
        k = codec.codec.k
        if len(blocks) > k:
            try:
                wrong = await loop.run_in_executor(self._cpu, codec.audit, seg, last, plen,
                                                   blocks)
            except IntegrityError:
                wrong = [-1]
            if not wrong:
                return await loop.run_in_executor(self._cpu, codec.decode, seg, last, plen,
                                                  blocks)
        every = await self._all_blocks(codec, sources, seg, blocks, small)
        wrong = await loop.run_in_executor(self._cpu, codec.audit, seg, last, plen, every)
        self._report_liars(codec, sources, wrong, liars, seg)
        good = {i: b for i, b in every.items() if i not in wrong}
        return await loop.run_in_executor(self._cpu, codec.decode, seg, last, plen, good)

    def _report_liars(self, codec: StripeCodec, sources: Sequence[tuple[int, NodeSpec]],
                      lying: list[int], liars: set[int], seg: int) -> None:
        node_of = dict(sources)
        for i in lying:
            liars.add(i)
            self.lies.report(codec.stripe_id, i, node_of[i], "read", seg)

    async def _all_blocks(self, codec: StripeCodec, sources: Sequence[tuple[int, NodeSpec]],
                          seg: int, blocks: dict[int, bytes], small: bool) -> dict[int, bytes]:
        """`blocks` plus segment `seg`'s block of every other shard that can be read."""
        headers = codec.headers()

        async def fetch(i: int, node: NodeSpec) -> bytes | None:
            sid = shard_id(codec.stripe_id, i)
            try:
                if small:
                    frames = await self._client.read_small(node, sid, headers[i], seg, 1)
                else:
                    frames = [f async for f in self._client.read_frames(node, sid, headers[i],
                                                                        seg, 1)]
            except StorageError:
                return None
            return frames[0][1] if frames else None

        extra = [(i, n) for i, n in sources if i not in blocks]
        got = await asyncio.gather(*(fetch(i, n) for i, n in extra))
        every = dict(blocks)
        every.update({i: b for (i, _), b in zip(extra, got, strict=True) if b is not None})
        return every

    async def _recover(self, codec: StripeCodec, sources: Sequence[tuple[int, NodeSpec]],
                       seg: int, last: bool, plen: int, blocks: dict[int, bytes],
                       liars: set[int], small: bool) -> bytes:
        """One segment whose tag failed: read its block from every other shard, find k that
        authenticate (on the thread pool: up to C(k+m, k) decodes), report the liars.

        Shards on usable nodes first: a node known down is read only when those do not
        authenticate (a hung one would hold the read for its whole timeout)."""
        loop = asyncio.get_running_loop()
        usable = [(i, n) for i, n in sources if self._health.is_usable(n.id)]
        every = await self._all_blocks(codec, usable, seg, blocks, small)
        if len(usable) < len(sources):
            try:
                plain, lying = await loop.run_in_executor(
                    self._cpu, codec.authenticate, seg, last, plen, every)
            except IntegrityError:
                every = await self._all_blocks(codec, sources, seg, every, small)
            else:
                self._report_liars(codec, sources, lying, liars, seg)
                return plain
        plain, lying = await loop.run_in_executor(
            self._cpu, codec.authenticate, seg, last, plen, every)
        self._report_liars(codec, sources, lying, liars, seg)
        return plain

    async def delete(self, stripe_id: bytes, nodes: Sequence[str | None]) -> list[str]:
        """Delete every shard of a stripe; returns the nodes that could not be reached."""
        by_id = self._nodes_by_id()
        failed: list[str] = []

        async def one(i: int, nid: str) -> None:
            try:
                await self._client.delete_shard(by_id[nid], shard_id(stripe_id, i))
            except StorageError:
                failed.append(nid)

        await asyncio.gather(*(one(i, n) for i, n in enumerate(nodes) if n and n in by_id))
        return failed
