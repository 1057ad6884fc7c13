"""The pure codec of the data path: segment -> AES-256-GCM -> zfec -> framed shard blocks.

Synchronous and free of I/O so it is easy to test; `objects` runs it on a thread pool
(AES-GCM, zfec and crc32c all release the GIL). Encrypt-then-code means nodes only ever
hold ciphertext, and the GCM tag is the end-to-end check that a decoded segment is right.
A codec without a cipher moves sealed segments as they are (encode codes them, decode
returns them still sealed): how an SSE-C object is re-coded without its customer key.
"""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from time import perf_counter

from storage.buffers import LendingPools
from storage.crypto.aead import TAG_BYTES, SegmentCipher
from storage.crypto.keys import segment_aad
from storage.erasure import ErasureCodec, block_size
from storage.errors import IntegrityError
from storage.shards.auth import TRAILER_BYTES
from storage.shards.format import (
    FRAME_HEAD,
    FRAME_HEAD_BYTES,
    HEADER_BYTES,
    ShardHeader,
    frame_checksum,
    pack_frame,
)
from storage.shards.slot import HEAD_ROOM, ShardSlot
from storage.telemetry import stage

_NEW_BYTEARRAY = ctypes.pythonapi.PyByteArray_FromStringAndSize
_NEW_BYTEARRAY.restype = ctypes.py_object
_NEW_BYTEARRAY.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]


# A streaming write's full segments' frame buffers, reused once no frame of theirs is
# referred to any more: a new multi-megabyte buffer per segment cost page faults (malloc's
# heap gave the pages back between segments, and the kernel mapped and zeroed them again:
# ~100k faults per GB in the gateway under 64 MiB PUTs). At most this many bytes are kept
# per process, all sizes (profiles, segment sizes) together: three 4 MiB segments' frame
# sets (~6.3 MiB each at 4+2); the rest come from malloc as before. Not counted in the
# upload budget while idle (a lent one is, as the write's frame set); `StripeStore` lets
# the idle ones go 0.25 s after the last streaming write (stripes.FRAME_TRIM).
FRAME_POOL_BYTES = 20 * 1024 * 1024
FRAME_BUFFERS = LendingPools(FRAME_POOL_BYTES)


def uninitialized(n: int) -> bytearray:
    """A bytearray of `n` bytes left as malloc gave them (`bytearray(n)` zero-fills: a
    memset per byte of every segment's frames). Only for buffers written whole."""
    return _NEW_BYTEARRAY(None, n)  # type: ignore[no-any-return]


def _copied_slot(body: bytes) -> ShardSlot:
    """A slot with no room around `body` (the sender then sends the pieces apart)."""
    return ShardSlot(memoryview(body + bytes(TRAILER_BYTES)), 0)


def segment_count(size: int, segment_size: int) -> int:
    return -(-size // segment_size)


def segment_length(size: int, segment_size: int, index: int) -> int:
    """Plaintext bytes in segment `index` of a part of `size` bytes."""
    return min(segment_size, size - index * segment_size)


def shard_file_bytes(size: int, segment_size: int, k: int) -> int:
    """Exact size of each shard file of a part of `size` bytes (all shards are equal)."""
    n = segment_count(size, segment_size)
    return HEADER_BYTES + sum(
        FRAME_HEAD_BYTES + block_size(segment_length(size, segment_size, i) + TAG_BYTES, k)
        for i in range(n))


def shard_headers(k: int, m: int, segment_size: int, stripe_id: bytes) -> list[ShardHeader]:
    """The header of every shard index of a stripe (what the writer puts in each file)."""
    b = block_size(segment_size + TAG_BYTES, k)
    return [ShardHeader(k=k, m=m, index=i, segment_size=segment_size, block_size=b,
                        stripe_id=stripe_id) for i in range(k + m)]


@dataclass(frozen=True)
class StripeCodec:
    """Everything needed to encode or decode the segments of one part of one object version.

    With `cipher` None the segments given to `encode` and returned by `decode` are sealed
    (plaintext length + TAG_BYTES): the associated data is never needed, so the sealed
    segments stay valid wherever they are stored next, as long as identity, part number
    and segment boundaries are kept.
    """

    cipher: SegmentCipher | None
    codec: ErasureCodec
    identity: str
    part: int
    stripe_id: bytes
    segment_size: int

    @property
    def input_segment(self) -> int:
        """Bytes of one full segment as `encode` takes it (sealed when there is no cipher)."""
        return self.segment_size + (TAG_BYTES if self.cipher is None else 0)

    def headers(self) -> list[ShardHeader]:
        return shard_headers(self.codec.k, self.codec.m, self.segment_size, self.stripe_id)

    def encode(self, headers: list[ShardHeader], index: int, last: bool,
               plaintext: bytes | memoryview) -> list[bytes]:
        """Seal and erasure-code one segment; returns one framed block per shard."""
        t0 = perf_counter()
        sealed: bytes | memoryview
        if self.cipher is None:
            sealed = plaintext  # already sealed: re-coded as is
        else:
            sealed = self.cipher.seal(index, plaintext,
                                      segment_aad(self.identity, self.part, index, last))
        t1 = perf_counter()
        blocks = self.codec.encode(sealed)
        stage("erasure_encode", perf_counter() - t1)
        if self.cipher is not None:
            stage("encrypt", t1 - t0)
        return [pack_frame(h, index, blk) for h, blk in zip(headers, blocks, strict=True)]

    def encode_frames(self, headers: list[ShardHeader], index: int, last: bool,
                      plaintext: bytes | memoryview | list[bytes | memoryview],
                      ) -> list[bytes | memoryview]:
        """`encode` with no copy of a block: the frames of the segment are laid out in one
        new buffer, the ciphertext encrypted straight into the data blocks' places, the
        parity coded into theirs and each frame head packed in front of its block; the
        frames returned are views of that buffer (the same bytes `encode` returns).

        `plaintext` may be the segment's pieces in order (chunks as they were received):
        each is encrypted into place, so the segment is never joined. The buffer is not
        zero-filled: every byte of it a frame holds is written (ciphertext, tag, the data
        blocks' padding, parity, heads). Segments that `encode` re-codes as they are (no
        cipher) go through `encode`."""
        pieces = plaintext if isinstance(plaintext, list) else [plaintext]
        if self.cipher is None:
            return self.encode(headers, index, last,
                               pieces[0] if len(pieces) == 1 else b"".join(pieces))
        return list(self._lay_out(headers, index, last, pieces, 0, 0)[2])

    def encode_slots(self, headers: list[ShardHeader],
                     plaintext: list[bytes | memoryview]) -> list[ShardSlot]:
        """A whole one-segment stripe's shard files (header + its one frame), each in a
        `ShardSlot` of one buffer with room for its request's head and trailer: the lean
        sender sends each without a copy. Same bytes as `header.pack() + frame`."""
        if self.cipher is None:  # re-coded as they are (rare: no buffer to save)
            frames = self.encode_frames(headers, 0, True, plaintext)
            return [_copied_slot(h.pack() + f) for h, f in zip(headers, frames, strict=True)]
        lead = HEAD_ROOM + HEADER_BYTES
        view, step, frames = self._lay_out(headers, 0, True, plaintext, lead, TRAILER_BYTES)
        slots = []
        for i, h in enumerate(headers):
            view[i * step + HEAD_ROOM:i * step + lead] = h.pack()
            slots.append(ShardSlot(view[i * step:(i + 1) * step], HEAD_ROOM))
        return slots

    def _lay_out(self, headers: list[ShardHeader], index: int, last: bool,
                 pieces: list[bytes | memoryview], lead: int, tail: int,
                 ) -> tuple[memoryview, int, list[bytes | memoryview]]:
        """Seal and code one segment into a new buffer of one slot per shard, each `lead`
        free bytes, the frame, `tail` free bytes: (the buffer, the slot size, the frames)."""
        t0 = perf_counter()
        k = self.codec.k
        plen = sum(len(p) for p in pieces)
        sealed_len = plen + TAG_BYTES
        b = block_size(sealed_len, k)
        step = lead + FRAME_HEAD_BYTES + b + tail
        first = lead + FRAME_HEAD_BYTES  # where slot 0's block starts
        width = len(headers)
        size = step * width + TAG_BYTES  # slack: see update_into below
        buf: bytearray | mmap.mmap | None = None
        if plen == self.segment_size and not lead and not tail:  # a streaming write's
            buf = FRAME_BUFFERS.lend(size)
        if buf is None:  # a short segment (sizes vary), a one-segment stripe's slots, or
            buf = uninitialized(size)  # every kept buffer in use
        view = memoryview(buf)
        enc = self.cipher.sealer(index, segment_aad(self.identity, self.part, index, last))  # type: ignore[union-attr]
        blk = off = 0  # where the next plaintext byte goes: data block, offset in it
        for piece in pieces:
            src = memoryview(piece)
            pos, left = 0, len(src)
            while left:
                n = min(b - off, left)
                at = blk * step + first + off  # update_into wants 15 bytes of room past n:
                # the next slot's room or frame, or the tail: all written later
                if enc.update_into(src[pos:pos + n], view[at:at + n + TAG_BYTES - 1]) != n:
                    raise AssertionError("GCM wrote a block short")  # never: a stream mode
                pos, left, off = pos + n, left - n, off + n
                if off == b:
                    blk, off = blk + 1, 0
        enc.finalize()
        tag = enc.tag
        for j in range(TAG_BYTES):  # the tag follows the ciphertext in the sealed segment
            slot, at = divmod(plen + j, b)
            buf[slot * step + first + at] = tag[j]
        for i in range(k):  # the data blocks' padding past the sealed segment: zeros
            filled = min(b, max(0, sealed_len - i * b))
            if filled < b:
                view[i * step + first + filled:i * step + first + b] = bytes(b - filled)
        t1 = perf_counter()
        self.codec.parity_into(buf, [i * step + first for i in range(k)], b,
                               [view[r * step + first:r * step + first + b]
                                for r in range(k, width)])
        stage("erasure_encode", perf_counter() - t1)
        stage("encrypt", t1 - t0)
        frames: list[bytes | memoryview] = []
        for i, h in enumerate(headers):
            block = view[i * step + first:i * step + first + b]
            FRAME_HEAD.pack_into(buf, i * step + lead, b, frame_checksum(h, index, block))
            frames.append(view[i * step + lead:i * step + first + b])
        return view, step, frames

    def decode(self, index: int, last: bool, plain_len: int, blocks: dict[int, bytes]) -> bytes:
        """Rebuild and open one segment from any k verified blocks."""
        t0 = perf_counter()
        sealed = self.codec.decode(blocks, plain_len + TAG_BYTES)
        t1 = perf_counter()
        stage("erasure_decode", t1 - t0)
        if self.cipher is None:
            return sealed
        try:
            return self.cipher.open(index, sealed,
                                    segment_aad(self.identity, self.part, index, last))
        finally:
            stage("decrypt", perf_counter() - t1)

    def open_into(self, index: int, last: bool, plain_len: int,
                  blocks: Mapping[int, bytes | memoryview], out: bytearray,
                  ) -> memoryview | None:
        """`decode` without a copy when the k data blocks are all there (the usual read):
        the sealed segment is those blocks end to end, so it is decrypted from them
        straight into `out` (plain_len + 2 * TAG_BYTES bytes). Returns a view of `out`,
        only once the tag verified; None when this shortcut does not apply."""
        k = self.codec.k
        if self.cipher is None or any(i not in blocks for i in range(k)):
            return None
        sealed_len = plain_len + TAG_BYTES
        b = block_size(sealed_len, k)
        pieces = [memoryview(blocks[i]) for i in range(k)]
        if any(len(p) != b for p in pieces):
            return None  # not this segment's layout: the general path decides
        t0 = perf_counter()
        try:
            return self.cipher.open_into(index, pieces, sealed_len,
                                         segment_aad(self.identity, self.part, index, last), out)
        finally:
            stage("decrypt", perf_counter() - t0)

    def authenticate(self, index: int, last: bool, plain_len: int,
                     blocks: Mapping[int, bytes]) -> tuple[bytes, list[int]]:
        """Open one segment although some blocks may lie (valid checksums, wrong bytes).

        Tries the k-subsets of `blocks` in order (15 for 4+2) until one decodes to a segment
        whose GCM tag verifies, then re-encodes it: the blocks that differ from that
        authenticated codeword are the liars. Returns (plaintext, liar indexes); raises
        IntegrityError when no subset authenticates (more liars than spare blocks).
        """
        assert self.cipher is not None, "a codec without a cipher cannot authenticate"
        aad = segment_aad(self.identity, self.part, index, last)
        for subset in combinations(sorted(blocks), self.codec.k):
            sealed = self.codec.decode({i: blocks[i] for i in subset}, plain_len + TAG_BYTES)
            try:
                plain = self.cipher.open(index, sealed, aad)
            except IntegrityError:
                continue
            return plain, self._disagreeing(sealed, blocks)
        raise IntegrityError(f"segment {index} failed authentication with every "
                             f"{self.codec.k} of the {len(blocks)} shards read")

    def audit(self, index: int, last: bool, plain_len: int,
              blocks: Mapping[int, bytes]) -> list[int]:
        """The indexes of `blocks` (ideally all k+m) that disagree with the segment.

        With a cipher the reference is the authenticated segment (`authenticate`). Without
        one (SSE-C data, whose key the cluster does not keep) it is the codeword that at
        least k+1 blocks agree on; IntegrityError when no codeword has that support.
        """
        k = self.codec.k
        if self.cipher is None:
            return self.reference(index, last, plain_len, blocks)[1]
        first = {i: blocks[i] for i in sorted(blocks)[:k]}
        sealed = self.codec.decode(first, plain_len + TAG_BYTES)
        try:
            self.cipher.open(index, sealed, segment_aad(self.identity, self.part, index, last))
        except IntegrityError:
            return self.authenticate(index, last, plain_len, blocks)[1]
        return self._disagreeing(sealed, blocks)

    def reference(self, index: int, last: bool, plain_len: int,
                  blocks: Mapping[int, bytes]) -> tuple[bytes, list[int]]:
        """The sealed segment `blocks` should encode, and the indexes that disagree with it.

        With a cipher: the first k-subset whose decode authenticates. Without one: the
        codeword more than k blocks agree on. IntegrityError when there is none (too many
        liars in this segment): a caller never writes or returns a guess.
        """
        k = self.codec.k
        aad = segment_aad(self.identity, self.part, index, last)
        best: tuple[bytes, list[int]] | None = None
        for subset in combinations(sorted(blocks), k):
            sealed = self.codec.decode({i: blocks[i] for i in subset}, plain_len + TAG_BYTES)
            if self.cipher is not None:
                try:
                    self.cipher.open(index, sealed, aad)
                except IntegrityError:
                    continue
                return sealed, self._disagreeing(sealed, blocks)
            wrong = self._disagreeing(sealed, blocks)
            if not wrong:
                return sealed, []
            if len(blocks) - len(wrong) > k and (best is None or len(wrong) < len(best[1])):
                best = (sealed, wrong)
        if best is None:
            what = ("authenticates" if self.cipher is not None
                    else f"is supported by more than {k}")
            raise IntegrityError(f"segment {index}: no codeword {what} of the {len(blocks)} "
                                 f"shards read")
        return best

    def _disagreeing(self, sealed: bytes, blocks: Mapping[int, bytes]) -> list[int]:
        return self.codec.disagreeing(sealed, blocks)
