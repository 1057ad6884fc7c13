"""The shard file format (version 1), shared by the gateway that writes it and the node.

    header (44 bytes): magic "TSHD", format u8, k u8, m u8, index u8, checksum alg u8,
                       codec u8, reserved 2, segment_size u32, block_size u32,
                       stripe id 16 bytes, reserved 4, header crc32c u32
    frames: for each segment, length u32 | crc32c u32 | block bytes

A frame's checksum is seeded with the stripe id, shard index and segment number, so a node
(which holds no keys) detects bit rot and frames swapped within or between files. Every
frame but the last has `block_size` bytes, so frame i starts at a computable offset.
The codec byte names the erasure code of the blocks; the only one is 0 (CODEC_RS_ZFEC:
zfec's systematic Reed-Solomon, written by zfec or by ISA-L with the same matrix, see
`storage.erasure`). It was a reserved zero byte before it had a name, so every shard ever
written says 0; a reader refuses a code it does not know instead of misdecoding it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c

from storage.errors import IntegrityError

MAGIC = b"TSHD"
FORMAT_VERSION = 1
CHECKSUM_CRC32C = 1
CODEC_RS_ZFEC = 0
CODECS = frozenset({CODEC_RS_ZFEC})
_HEADER = struct.Struct(">4sBBBBBB2xII16s4x")
HEADER_BYTES = _HEADER.size + 4
FRAME_HEAD = struct.Struct(">II")
FRAME_HEAD_BYTES = FRAME_HEAD.size
MAX_BLOCK_BYTES = 64 * 1024 * 1024
# A shard GET whose reader checks every frame's length and checksum before using it (the
# gateway's `FrameAssembler`) says so in this signed header: the node then sends the frames
# without checking them again (one pass over the bytes fewer; see `nodes.shardread`).
READER_CHECKS_HEADER = "X-Tessera-Reader-Checks"
READER_CHECKS = "frames"


@dataclass(frozen=True)
class ShardHeader:
    k: int
    m: int
    index: int
    segment_size: int
    block_size: int
    stripe_id: bytes
    checksum: int = CHECKSUM_CRC32C
    codec: int = CODEC_RS_ZFEC

    def pack(self) -> bytes:
        assert len(self.stripe_id) == 16 and 0 <= self.index < self.k + self.m
        body = _HEADER.pack(MAGIC, FORMAT_VERSION, self.k, self.m, self.index, self.checksum,
                            self.codec, self.segment_size, self.block_size, self.stripe_id)
        return body + struct.pack(">I", crc32c.crc32c(body))

    @classmethod
    def unpack(cls, raw: bytes) -> ShardHeader:
        if len(raw) < HEADER_BYTES:
            raise IntegrityError("shard header truncated")
        body, (crc,) = raw[: _HEADER.size], struct.unpack(">I", raw[_HEADER.size:HEADER_BYTES])
        if crc32c.crc32c(body) != crc:
            raise IntegrityError("shard header checksum mismatch")
        magic, version, k, m, index, alg, codec, seg, bsize, sid = _HEADER.unpack(body)
        if magic != MAGIC:
            raise IntegrityError("not a shard file")
        if version != FORMAT_VERSION:
            raise IntegrityError(f"unsupported shard format {version}")
        if (alg != CHECKSUM_CRC32C or not 0 < bsize <= MAX_BLOCK_BYTES or k < 1 or m < 1
                or index >= k + m):
            raise IntegrityError("bad shard header fields")
        if codec not in CODECS:
            raise IntegrityError(f"unsupported erasure codec {codec}")
        return cls(k=k, m=m, index=index, segment_size=seg, block_size=bsize, stripe_id=sid,
                   checksum=alg, codec=codec)

    def frame_offset(self, segment: int) -> int:
        return HEADER_BYTES + segment * (FRAME_HEAD_BYTES + self.block_size)

    def seed(self, segment: int) -> int:
        return crc32c.crc32c(struct.pack(">16sBQ", self.stripe_id, self.index, segment))


def frame_checksum(header: ShardHeader, segment: int, block: bytes | memoryview) -> int:
    return crc32c.crc32c(block, header.seed(segment))


def pack_frame(header: ShardHeader, segment: int, block: bytes | memoryview) -> bytes:
    """Frame head + block in one new bytes object (the block's only copy)."""
    return FRAME_HEAD.pack(len(block), frame_checksum(header, segment, block)) + block


def verify_frame(header: ShardHeader, segment: int, block: bytes | memoryview, crc: int) -> None:
    if frame_checksum(header, segment, block) != crc:
        raise IntegrityError(f"segment {segment} of shard {header.index}: checksum mismatch")


class FrameReader:
    """Incremental parser of header + frames from a byte stream (push-based, bounded).

    Chunks are kept as they come (memoryviews, no copy) until a frame is complete; its
    block is then copied once into its own bytes (joined when it spans chunks).
    """

    def __init__(self, expect_header: bool = True, header: ShardHeader | None = None,
                 first_segment: int = 0) -> None:
        self._parts: list[memoryview] = []
        self._have = 0
        self.header = header
        self._need_header = expect_header
        self.segment = first_segment

    def _take(self, n: int) -> bytes:
        """The next `n` buffered bytes, consumed (one copy)."""
        first = self._parts[0]
        if len(first) >= n:
            out = bytes(first[:n])
            if len(first) == n:
                self._parts.pop(0)
            else:
                self._parts[0] = first[n:]
        else:
            got: list[memoryview] = []
            need = n
            while need:
                p = self._parts[0]
                if len(p) <= need:
                    got.append(p)
                    need -= len(p)
                    self._parts.pop(0)
                else:
                    got.append(p[:need])
                    self._parts[0] = p[need:]
                    need = 0
            out = b"".join(got)
        self._have -= n
        return out

    def _peek_head(self) -> tuple[int, int]:
        first = self._parts[0]
        if len(first) >= FRAME_HEAD_BYTES:
            return FRAME_HEAD.unpack_from(first)
        raw = bytearray()
        for p in self._parts:
            raw += p[:FRAME_HEAD_BYTES - len(raw)]
            if len(raw) == FRAME_HEAD_BYTES:
                break
        return FRAME_HEAD.unpack(raw)

    def feed(self, data: bytes | memoryview) -> list[tuple[int, bytes]]:
        """Return the (segment number, block) frames completed by `data`, verified."""
        if len(data):
            if not isinstance(data, bytes):
                data = bytes(data)  # the caller may reuse its buffer
            self._parts.append(memoryview(data))
            self._have += len(data)
        out: list[tuple[int, bytes]] = []
        if self._need_header:
            if self._have < HEADER_BYTES:
                return out
            self.header = ShardHeader.unpack(self._take(HEADER_BYTES))
            self._need_header = False
        assert self.header is not None
        while self._have >= FRAME_HEAD_BYTES:
            length, crc = self._peek_head()
            if length > self.header.block_size or length == 0:
                raise IntegrityError(f"frame {self.segment} has bad length {length}")
            if self._have < FRAME_HEAD_BYTES + length:
                break
            self._take(FRAME_HEAD_BYTES)
            block = self._take(length)
            verify_frame(self.header, self.segment, block, crc)
            out.append((self.segment, block))
            self.segment += 1
        return out

    @property
    def pending(self) -> int:
        return self._have


class FrameLayoutError(IntegrityError):
    """A frame shorter than the block size that is not the last: offsets would not compute."""


class FrameScanner:
    """Checks a shard byte stream (header + frames) as it passes, keeping none of it.

    What the node needs from an upload: the header, every frame's length and checksum
    (crc32c computed piece by piece over memoryviews of the chunks as they arrive, so no
    frame is ever assembled), the frame count, and where the stream stops. IntegrityError
    on a bad header, length or checksum; FrameLayoutError on a short frame before the last.
    """

    def __init__(self) -> None:
        self.header: ShardHeader | None = None
        self.segments = 0  # complete, verified frames
        self._small = bytearray()  # a header or frame head split between chunks
        self._left = 0  # bytes of the current frame's block still to come
        self._crc = 0
        self._want = 0
        self._short = False

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self.header is None:
                take = HEADER_BYTES - len(self._small)
                self._small += view[:take]
                view = view[take:]
                if len(self._small) == HEADER_BYTES:
                    self.header = ShardHeader.unpack(bytes(self._small))
                    self._small.clear()
                continue
            if self._left == 0:
                take = FRAME_HEAD_BYTES - len(self._small)
                self._small += view[:take]
                view = view[take:]
                if len(self._small) < FRAME_HEAD_BYTES:
                    continue
                length, self._want = FRAME_HEAD.unpack(self._small)
                self._small.clear()
                if length > self.header.block_size or length == 0:
                    raise IntegrityError(f"frame {self.segments} has bad length {length}")
                if self._short:
                    raise FrameLayoutError("only the last frame may be shorter than the "
                                           "block size")
                self._short = length < self.header.block_size
                self._left = length
                self._crc = self.header.seed(self.segments)
                continue
            piece = view[:self._left]
            view = view[len(piece):]
            self._crc = crc32c.crc32c(piece, self._crc)
            self._left -= len(piece)
            if self._left == 0:
                if self._crc != self._want:
                    raise IntegrityError(f"segment {self.segments} of shard "
                                         f"{self.header.index}: checksum mismatch")
                self.segments += 1

    @property
    def pending(self) -> int:
        """Bytes of an incomplete header, frame head or block (0 at a frame boundary)."""
        return len(self._small) + (self._left and 1)
