"""Rebuilding lost shards of one stripe from any k healthy ones, without keys.

Repair works on ciphertext: for each segment it reads k verified shard blocks, decodes them
to the sealed (encrypted) segment, re-encodes it and keeps the blocks of the shard indexes
that were lost, then streams those as complete shard files (header + frames) to new nodes.
The GCM tag is not checked here (no key); per-frame checksums guard every block read, and
when a spare source exists k+1 blocks are read and must agree on one codeword: a lying
source (valid checksums, wrong bytes) stops the rebuild with `SourcesDisagree` instead of
spreading its lie into the rebuilt shards. A segment read from k sources only (m shards
lost, or a spare that failed) has nothing to compare with: given a `guard` (the stripe's
keyed reference, where the cluster holds the key, looked up only when a segment needs it)
it must authenticate instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from storage.blockreads import read_blocks, read_small_blocks
from storage.buffers import BufferPool
from storage.config import NodeSpec
from storage.crypto.aead import TAG_BYTES
from storage.erasure import ErasureCodec
from storage.errors import IntegrityError, KeyCheckUnavailable, StorageError
from storage.pipeline import segment_count, segment_length, shard_file_bytes, shard_headers
from storage.records import PartLayout
from storage.shardfeed import ShardSender as _ShardSender
from storage.shards.format import ShardHeader, pack_frame
from storage.shards.ids import shard_id
from storage.shards.transport import NodeTransport
from storage.throttle import Throttle


class SourcesDisagree(IntegrityError):
    """The source blocks of a rebuild are not one codeword: at least one of them lies."""


def _rebuild_checked(codec: ErasureCodec, blocks: Mapping[int, bytes], length: int,
                     wanted: list[int]) -> dict[int, bytes | memoryview]:
    """The `wanted` blocks of one segment, refusing when a block beyond the k decoded
    disagrees (`ErasureCodec.repair`: only the missing rows and the check rows are coded)."""
    rebuilt, wrong = codec.repair(blocks, length, wanted)
    if wrong:
        raise SourcesDisagree(f"rebuild sources are not one codeword (shards {wrong} or "
                              f"the first {codec.k} disagree)")
    return rebuilt


def _framed(headers: Sequence[ShardHeader], seg: int,
            rebuilt: Mapping[int, bytes | memoryview]) -> dict[int, bytes]:
    """The rebuilt blocks as frames (head + block), built in the same thread-pool job as the
    coding: the crc32c and the copy stay off the event loop, and the frames own their bytes
    (the source blocks may be pooled buffers given back before the frames leave)."""
    return {i: pack_frame(headers[i], seg, b) for i, b in rebuilt.items()}


def _rebuild_frames(codec: ErasureCodec, headers: Sequence[ShardHeader], seg: int,
                    blocks: Mapping[int, bytes | memoryview], length: int,
                    wanted: list[int]) -> dict[int, bytes]:
    """`_rebuild_checked`, framed: one thread-pool job per segment."""
    return _framed(headers, seg, _rebuild_checked(codec, blocks, length, wanted))


def part_headers(part: PartLayout) -> list[ShardHeader]:
    """The shard headers of every index of a part's stripe (as the writer made them)."""
    return shard_headers(part.k, part.m, part.segment_size, part.stripe_id)


# (segment, last, plaintext length, blocks) -> (sealed segment, indexes that disagree)
Reference = Callable[[int, bool, int, dict[int, bytes]], tuple[bytes, list[int]]]
# The key's check of a rebuild, looked up when a segment first has no spare block (None
# without a key: unchecked); raises KeyCheckUnavailable when the lookup failed.
Guard = Callable[[], Awaitable[Reference | None]]


def _rebuild_from(reference: Reference, codec: ErasureCodec, seg: int, last: bool,
                  plain_len: int, blocks: dict[int, bytes], wanted: list[int],
                  trusted: set[int] | None = None,
                  ) -> tuple[dict[int, bytes | memoryview], list[int]]:
    """The wanted blocks of one segment from the codeword `reference` vouches for. Without
    one (keyless: no codeword more than k blocks agree on), from the `trusted` blocks (the
    shards nobody named a liar) when k of them were read: what a rebuild that leaves the
    named liars out would write."""
    try:
        sealed, wrong = reference(seg, last, plain_len, blocks)
    except IntegrityError as exc:  # more liars than spare blocks in this segment
        kept = {i: b for i, b in blocks.items() if trusted is not None and i in trusted}
        if len(kept) < codec.k:
            raise SourcesDisagree(str(exc)) from exc
        return _rebuild_checked(codec, kept, plain_len + TAG_BYTES, wanted), []
    full = codec.encode(sealed)
    return {i: full[i] for i in wanted}, wrong


def _rebuild_whole_files(reference: Reference | None, codec: ErasureCodec,
                         headers: Sequence[ShardHeader], part: PartLayout,
                         segments: list[dict[int, bytes]], wanted: list[int],
                         trusted: set[int] | None, guard: Reference | None = None,
                         ) -> tuple[dict[int, bytes], int, set[int]]:
    """Every segment of a stripe rebuilt as in the streaming path, in one thread-pool job:
    the wanted shard files (header + frames), their frame bytes, and the liars found."""
    frames: dict[int, list[bytes]] = {i: [headers[i].pack()] for i in wanted}
    liars: set[int] = set()
    nsegs = len(segments)
    for seg, blocks in enumerate(segments):
        plain_len = segment_length(part.size, part.segment_size, seg)
        if reference is not None:
            rebuilt, wrong = _rebuild_from(reference, codec, seg, seg == nsegs - 1, plain_len,
                                           blocks, wanted, trusted)
            liars.update(wrong)
            framed = _framed(headers, seg, rebuilt)
        elif guard is not None and len(blocks) <= codec.k:  # no spare block
            framed = _framed(headers, seg, _rebuild_from(
                guard, codec, seg, seg == nsegs - 1, plain_len, blocks, wanted)[0])
        else:
            framed = _rebuild_frames(codec, headers, seg, blocks, plain_len + TAG_BYTES, wanted)
        for i in wanted:
            frames[i].append(framed[i])
    files = {i: b"".join(f) for i, f in frames.items()}
    return files, sum(len(f) - len(frames[i][0]) for i, f in files.items()), liars


async def _rebuild_whole(client: NodeTransport, cpu: Executor, part: PartLayout,
                         sources: Sequence[tuple[int, NodeSpec]],
                         targets: Mapping[int, NodeSpec], throttle: Throttle | None,
                         reference: Reference | None, trusted: set[int] | None,
                         size: int, guard: Guard | None = None) -> RebuildResult:
    """`rebuild_shards` for shards of `size` bytes or less: each source shard read whole and
    each rebuilt shard written whole on the transport's bulk lane (`read_small` /
    `put_small` with `bulk`), so the reads and writes of the stripes repaired at once share
    one batch request per node instead of one request per shard. Same sources, same spare
    and the same checks as streaming; a source that fails is replaced by the next one."""
    codec = ErasureCodec(part.k, part.m)
    headers = part_headers(part)
    nsegs = segment_count(part.size, part.segment_size)
    wanted = sorted(targets)
    bad: dict[int, str] = {}

    def failed_source(index: int, _node: NodeSpec, exc: StorageError) -> None:
        bad[index] = str(exc)[:200]

    spare = max(1, len(sources) - part.k) if reference is not None else 1
    segments = [blocks async for _, blocks in read_small_blocks(
        client, headers, sources, part.k, 0, nsegs - 1, failed_source, spare=spare,
        bulk=size)]
    check = await guard() if guard is not None and reference is None and any(
        len(b) <= part.k for b in segments) else None  # the key only where a segment needs it
    files, nbytes, liars = await asyncio.get_running_loop().run_in_executor(
        cpu, _rebuild_whole_files, reference, codec, headers, part, segments, wanted, trusted,
        check)
    del segments

    async def put(i: int) -> str | None:
        try:
            await client.put_small(targets[i], shard_id(part.stripe_id, i), files[i], nsegs,
                                   replace=True, bulk=True)  # the target may hold a bad copy
        except StorageError as exc:
            return str(exc)[:200] or "failed"
        return None

    errors = await asyncio.gather(*(put(i) for i in wanted))
    if throttle is not None:
        await throttle.consume(nbytes)
    written = {i: targets[i].id for i, e in zip(wanted, errors, strict=True) if e is None}
    failed = {i: e for i, e in zip(wanted, errors, strict=True) if e is not None}
    return RebuildResult(written=written, failed=failed, bytes_written=nbytes,
                         bad_sources=bad, liars=liars)


async def _put_whole(client: NodeTransport, node: NodeSpec, sid: str, data: bytes,
                     segments: int) -> str | None:
    """One rebuilt shard file to its target in one PUT (`replace`: the target may hold a
    bad copy under the id); the reason it failed, None once the node fsynced it."""
    try:
        await client.put_shard(node, sid, data, segments, replace=True)
    except StorageError as exc:
        return str(exc)[:200] or "failed"
    return None


@dataclass
class RebuildResult:
    written: dict[int, str]  # shard index -> node id now holding the rebuilt shard
    failed: dict[int, str]  # shard index -> reason
    bytes_written: int
    bad_sources: dict[int, str]  # source shard index -> reason it could not be read
    liars: set[int] = field(default_factory=set)  # sources whose blocks disagreed (reference)


async def rebuild_shards(client: NodeTransport, cpu: Executor, part: PartLayout,
                         sources: Sequence[tuple[int, NodeSpec]],
                         targets: Mapping[int, NodeSpec], throttle: Throttle | None = None,
                         stall_s: float = 20.0, reference: Reference | None = None,
                         trusted: set[int] | None = None,
                         pool: BufferPool | None = None,
                         whole_bytes: int = 0, gather_bytes: int = 0,
                         guard: Guard | None = None) -> RebuildResult:
    """Stream rebuilt shards `targets` (index -> node) from `sources` (index, node).

    Sources are tried in order; one that fails mid-stream is replaced by the next. Raises
    DataUnavailable when fewer than k sources can be read for some segment. With
    `reference` (a stripe with lying shards, rebuilt where its key is) every source is read
    for every segment, liars included, and each segment is rebuilt from the codeword the
    reference authenticates: a shard that lies in one segment still serves the others.
    SourcesDisagree when a segment has no such codeword and (keyless) fewer than k of the
    `trusted` sources were read for it. With `pool`, source frames are received into its
    reused buffers (`read_blocks`), given back as soon as a segment's frames are built.
    Shards of `whole_bytes` or less are read and written whole (`_rebuild_whole`); those
    of `gather_bytes` or less are read as streams and each rebuilt shard is written whole.
    `guard` (the keyed reference, looked up when first needed): a segment read from only k
    sources is rebuilt from the sealed segment it authenticates, SourcesDisagree when it
    does not (no spare block can
    show a liar among k, and a rebuild from one would spread its lie to every new shard).
    """
    length = shard_file_bytes(part.size, part.segment_size, part.k)
    if length <= whole_bytes:
        return await _rebuild_whole(client, cpu, part, sources, targets, throttle, reference,
                                    trusted, length, guard)
    codec = ErasureCodec(part.k, part.m)
    headers = part_headers(part)
    nsegs = segment_count(part.size, part.segment_size)
    wanted = sorted(targets)
    loop = asyncio.get_running_loop()
    bad: dict[int, str] = {}
    # Shards of `gather_bytes` or less are gathered and sent whole, one PUT each (the
    # node client's lean sender); larger ones stream to their targets frame by frame.
    gather = length <= gather_bytes
    senders = {} if gather else {
        i: _ShardSender(client, targets[i], shard_id(part.stripe_id, i), headers[i].pack(),
                        nsegs, stall_s, length, replace=True)
        for i in wanted}  # a repair: the target may hold a bad copy under the id
    gathered: dict[int, list[bytes]] = {i: [headers[i].pack()] for i in wanted} \
        if gather else {}
    written_bytes = 0
    liars: set[int] = set()

    def failed_source(index: int, _node: NodeSpec, exc: StorageError) -> None:
        bad[index] = str(exc)[:200]

    try:
        spare = max(1, len(sources) - part.k) if reference is not None else 1
        segments = read_blocks(client, headers, sources, part.k, 0, nsegs - 1,
                               failed_source, spare=spare, pool=pool)
        async with contextlib.aclosing(segments):  # its buffers back before we return
            async for seg, blocks in segments:
                plain_len = segment_length(part.size, part.segment_size, seg)
                if reference is not None:
                    rebuilt, wrong = await loop.run_in_executor(
                        cpu, _rebuild_from, reference, codec, seg, seg == nsegs - 1, plain_len,
                        blocks, wanted, trusted)
                    liars.update(wrong)
                    frames = _framed(headers, seg, rebuilt)
                elif guard is not None and len(blocks) <= codec.k and \
                        (check := await guard()) is not None:  # no spare block: the key's
                    rebuilt, _ = await loop.run_in_executor(
                        cpu, _rebuild_from, check, codec, seg, seg == nsegs - 1, plain_len,
                        blocks, wanted)
                    frames = _framed(headers, seg, rebuilt)
                else:
                    frames = await loop.run_in_executor(cpu, _rebuild_frames, codec, headers, seg,
                                                        blocks, plain_len + TAG_BYTES, wanted)
                if gather:
                    for i in wanted:
                        gathered[i].append(frames[i])
                else:
                    await asyncio.gather(*(senders[i].send(frames[i]) for i in wanted))
                n = sum(len(f) for f in frames.values())
                written_bytes += n
                if throttle is not None:
                    await throttle.consume(n)
                if senders and not any(s.alive for s in senders.values()):
                    break
        if gather:
            errors = await asyncio.gather(*(_put_whole(
                client, targets[i], shard_id(part.stripe_id, i), b"".join(gathered.pop(i)),
                nsegs) for i in wanted))
            return RebuildResult(
                written={i: targets[i].id for i, e in zip(wanted, errors, strict=True) if e is None},
                failed={i: e for i, e in zip(wanted, errors, strict=True) if e is not None},
                bytes_written=written_bytes, bad_sources=bad, liars=liars)
        oks = await asyncio.gather(*(senders[i].finish() for i in wanted))
    except BaseException:
        for s in senders.values():
            await s.cancel()
        raise
    written = {i: targets[i].id for i, ok in zip(wanted, oks, strict=True) if ok}
    failed = {i: senders[i].error or "failed" for i, ok in zip(wanted, oks, strict=True)
              if not ok}
    return RebuildResult(written=written, failed=failed, bytes_written=written_bytes,
                         bad_sources=bad, liars=liars)


__all__ = ["Guard", "KeyCheckUnavailable", "Reference", "RebuildResult", "SourcesDisagree", "part_headers", "rebuild_shards"]
