"""The read path's zero-join pieces: FrameAssembler (shard GET bodies into pooled buffers),
SegmentCipher.open_into / StripeCodec.open_into (decrypt from blocks without joining them)
and BufferPool.

The assembler is checked against a plain whole-buffer model of the format, over arbitrary
chunk boundaries (both the copying `feed` and the recv_into-style `buffer`/`advance`) and
arbitrary damage: flipped bytes, truncation, trailing bytes, another shard's header.
"""

from __future__ import annotations

import os
import struct

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.buffers import BufferPool
from storage.crypto.aead import TAG_BYTES, SegmentCipher
from storage.erasure import ErasureCodec
from storage.errors import IntegrityError
from storage.pipeline import StripeCodec, shard_headers
from storage.shards.assembler import FrameAssembler
from storage.shards.format import FRAME_HEAD_BYTES, HEADER_BYTES, ShardHeader, pack_frame

SETTINGS = settings(max_examples=400, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
STRIPE = bytes(range(16))


def header(index: int = 2, block_size: int = 48) -> ShardHeader:
    return ShardHeader(k=4, m=2, index=index, segment_size=block_size * 4,
                       block_size=block_size, stripe_id=STRIPE)


def model(body: bytes, expect: ShardHeader, first: int, count: int,
          ) -> tuple[list[tuple[int, bytes]], str]:
    """The frames a correct reader may offer, and how the body ends: ok, short (ends
    early), corrupt (a bad header, length or checksum) or extra (bytes after the last)."""
    frames: list[tuple[int, bytes]] = []
    if len(body) < HEADER_BYTES:
        return frames, "short"
    try:
        h = ShardHeader.unpack(body[:HEADER_BYTES])
    except IntegrityError:
        return frames, "corrupt"
    if (h.stripe_id, h.index, h.k, h.m, h.block_size) != (
            expect.stripe_id, expect.index, expect.k, expect.m, expect.block_size):
        return frames, "corrupt"
    pos = HEADER_BYTES
    for seg in range(first, first + count):
        if len(body) - pos < FRAME_HEAD_BYTES:
            return frames, "short"
        length, crc = struct.unpack_from(">II", body, pos)
        if length == 0 or length > h.block_size:
            return frames, "corrupt"
        block = body[pos + FRAME_HEAD_BYTES:pos + FRAME_HEAD_BYTES + length]
        if len(block) < length:
            return frames, "short"
        if crc32c.crc32c(block, h.seed(seg)) != crc:
            return frames, "corrupt"
        frames.append((seg, block))
        pos += FRAME_HEAD_BYTES + length
    return frames, ("extra" if pos < len(body) else "ok")


class CountingPool(BufferPool):
    """A pool that checks no buffer is given back twice or given back while still offered."""

    def __init__(self) -> None:
        super().__init__(max_bytes=1 << 30)
        self.out: set[int] = set()

    def take(self, size: int) -> bytearray:
        buf = super().take(size)
        self.out.add(id(buf))
        return buf

    def give(self, buf: bytearray) -> None:
        assert id(buf) in self.out, "a buffer given back twice"
        self.out.remove(id(buf))
        super().give(buf)


def run(body: bytes, expect: ShardHeader, first: int, count: int, cuts: list[int],
        recv_into: bool) -> tuple[list[tuple[int, bytes]], str, CountingPool]:
    pool = CountingPool()
    asm = FrameAssembler(expect, first, count, pool)
    got: list[tuple[int, bytes]] = []
    outcome = "short"
    bounds = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    try:
        for a, b in zip(bounds, bounds[1:], strict=False):
            chunk = memoryview(body)[a:b]
            if recv_into:  # the socket path: fill what buffer() offers, maybe less
                while chunk:
                    dst = asm.buffer()
                    n = min(len(dst), len(chunk), max(1, len(dst) // 2 + 1))
                    dst[:n] = chunk[:n]
                    chunk = chunk[n:]
                    asm.advance(n)
            else:
                asm.feed(chunk)
            while asm.ready:
                seg, view, buf = asm.ready.popleft()
                got.append((seg, bytes(view)))
                pool.give(buf)
        if asm.done:
            outcome = "ok"
    except IntegrityError as exc:
        outcome = "extra" if "after the last frame" in str(exc) else "corrupt"
        while asm.ready:  # frames verified before the damage are still good
            seg, view, buf = asm.ready.popleft()
            got.append((seg, bytes(view)))
            pool.give(buf)
    asm.close()
    return got, outcome, pool


def body_of(h: ShardHeader, first: int, blocks: list[bytes]) -> bytes:
    return h.pack() + b"".join(pack_frame(h, first + i, b) for i, b in enumerate(blocks))


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, ShardHeader, int, int]:
    h = header(block_size=draw(st.integers(1, 64)))
    first = draw(st.integers(0, 5))
    n = draw(st.integers(0, 6))
    sizes = [h.block_size] * n
    if n:
        sizes[-1] = draw(st.integers(1, h.block_size))
    blocks = [draw(st.binary(min_size=s, max_size=s)) for s in sizes]
    body = body_of(h, first, blocks)
    count = n
    damage = draw(st.sampled_from(["none", "flip", "truncate", "extra", "other_shard",
                                   "fewer_asked"]))
    expect = h
    if damage == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        bit = 1 << draw(st.integers(0, 7))
        body = body[:at] + bytes([body[at] ^ bit]) + body[at + 1:]
    elif damage == "truncate":
        body = body[:draw(st.integers(0, max(0, len(body) - 1)))]
    elif damage == "extra":
        body += draw(st.binary(min_size=1, max_size=20))
    elif damage == "other_shard":
        expect = header(index=3, block_size=h.block_size)
    elif damage == "fewer_asked" and n:
        count = draw(st.integers(0, n - 1))
    return body, expect, first, count


@SETTINGS
@given(case=bodies(), cuts=st.lists(st.integers(0, 1 << 16), max_size=12),
       recv_into=st.booleans())
def test_assembler_matches_the_model_whatever_the_chunks_and_damage(
        case: tuple[bytes, ShardHeader, int, int], cuts: list[int], recv_into: bool) -> None:
    body, expect, first, count = case
    want_frames, want_outcome = model(body, expect, first, count)
    got_frames, outcome, pool = run(body, expect, first, count, cuts, recv_into)
    assert (got_frames, outcome) == (want_frames, want_outcome)
    assert not pool.out, "every pooled buffer went back"


def test_a_damaged_block_is_never_offered_and_the_ones_before_it_are() -> None:
    h = header(block_size=32)
    blocks = [os.urandom(32) for _ in range(3)]
    body = bytearray(body_of(h, 0, blocks))
    body[HEADER_BYTES + 2 * (FRAME_HEAD_BYTES + 32) - 1] ^= 0x40  # last byte of block 1
    got, outcome, _ = run(bytes(body), h, 0, 3, [], recv_into=True)
    assert outcome == "corrupt" and got == [(0, blocks[0])]


def test_pool_reuses_and_bounds() -> None:
    pool = BufferPool(max_bytes=100)
    a = pool.take(60)
    pool.give(a)
    assert pool.take(60) is a and pool.held == 0
    pool.give(a)
    pool.give(bytearray(60))  # over the bound: dropped
    assert pool.held == 60


@pytest.mark.parametrize("plen", [0, 1, 15, 16, 17, 1000, 65536 - 16, 65536 + 3])
@pytest.mark.parametrize("k", [1, 3, 4, 8])
def test_open_into_equals_open_and_refuses_a_bad_tag(plen: int, k: int) -> None:
    key = os.urandom(32)
    codec = StripeCodec(SegmentCipher(key), ErasureCodec(k, 2), "t/b/o/v", 1, STRIPE, 65536)
    pt = os.urandom(plen)
    frames = codec.encode(shard_headers(k, 2, 65536, STRIPE), 7, True, pt)
    blocks = {i: memoryview(f)[FRAME_HEAD_BYTES:] for i, f in enumerate(frames)}
    out = bytearray(65536 + 2 * TAG_BYTES)
    plain = codec.open_into(7, True, plen, blocks, out)
    assert plain is not None and bytes(plain) == pt == codec.decode(7, True, plen, blocks)
    assert codec.open_into(7, True, plen, {i: blocks[i] for i in range(1, k + 2)},
                           out) is None  # a data block missing: not this path
    b = len(blocks[0])
    tag_end = plen + TAG_BYTES - 1  # the tag's last byte, in whichever block it lies
    bad = {i: bytearray(blk) for i, blk in blocks.items()}
    bad[tag_end // b][tag_end % b] ^= 1
    with pytest.raises(IntegrityError):
        codec.open_into(7, True, plen, {i: memoryview(x) for i, x in bad.items()}, out)
    with pytest.raises(IntegrityError):  # another segment's associated data
        codec.open_into(7, False, plen, blocks, out)
