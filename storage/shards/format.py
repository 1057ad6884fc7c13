"""The shard file format (version 1), shared by the gateway that writes it and the node.

    header (44 bytes): magic "TSHD", format u8, k u8, m u8, index u8, checksum alg u8,
                       reserved 3, segment_size u32, block_size u32, stripe id 16 bytes,
                       reserved 4, header crc32c u32
    frames: for each segment, length u32 | crc32c u32 | block bytes

A frame's checksum is seeded with the stripe id, shard index and segment number, so a node
(which holds no keys) detects bit rot and frames swapped within or between files. Every
frame but the last has `block_size` bytes, so frame i starts at a computable offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c

from storage.errors import IntegrityError

MAGIC = b"TSHD"
FORMAT_VERSION = 1
CHECKSUM_CRC32C = 1
_HEADER = struct.Struct(">4sBBBBB3xII16s4x")
HEADER_BYTES = _HEADER.size + 4
FRAME_HEAD = struct.Struct(">II")
FRAME_HEAD_BYTES = FRAME_HEAD.size
MAX_BLOCK_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ShardHeader:
    k: int
    m: int
    index: int
    segment_size: int
    block_size: int
    stripe_id: bytes
    checksum: int = CHECKSUM_CRC32C

    def pack(self) -> bytes:
        assert len(self.stripe_id) == 16 and 0 <= self.index < self.k + self.m
        body = _HEADER.pack(MAGIC, FORMAT_VERSION, self.k, self.m, self.index, self.checksum,
                            self.segment_size, self.block_size, self.stripe_id)
        return body + struct.pack(">I", crc32c.crc32c(body))

    @classmethod
    def unpack(cls, raw: bytes) -> ShardHeader:
        if len(raw) < HEADER_BYTES:
            raise IntegrityError("shard header truncated")
        body, (crc,) = raw[: _HEADER.size], struct.unpack(">I", raw[_HEADER.size:HEADER_BYTES])
        if crc32c.crc32c(body) != crc:
            raise IntegrityError("shard header checksum mismatch")
        magic, version, k, m, index, alg, seg, bsize, sid = _HEADER.unpack(body)
        if magic != MAGIC:
            raise IntegrityError("not a shard file")
        if version != FORMAT_VERSION:
            raise IntegrityError(f"unsupported shard format {version}")
        if (alg != CHECKSUM_CRC32C or not 0 < bsize <= MAX_BLOCK_BYTES or k < 1 or m < 1
                or index >= k + m):
            raise IntegrityError("bad shard header fields")
        return cls(k=k, m=m, index=index, segment_size=seg, block_size=bsize, stripe_id=sid,
                   checksum=alg)

    def frame_offset(self, segment: int) -> int:
        return HEADER_BYTES + segment * (FRAME_HEAD_BYTES + self.block_size)

    def seed(self, segment: int) -> int:
        return crc32c.crc32c(struct.pack(">16sBQ", self.stripe_id, self.index, segment))


def frame_checksum(header: ShardHeader, segment: int, block: bytes | memoryview) -> int:
    return crc32c.crc32c(block, header.seed(segment))


def pack_frame(header: ShardHeader, segment: int, block: bytes) -> bytes:
    return FRAME_HEAD.pack(len(block), frame_checksum(header, segment, block)) + block


def verify_frame(header: ShardHeader, segment: int, block: bytes | memoryview, crc: int) -> None:
    if frame_checksum(header, segment, block) != crc:
        raise IntegrityError(f"segment {segment} of shard {header.index}: checksum mismatch")


class FrameReader:
    """Incremental parser of header + frames from a byte stream (push-based, bounded)."""

    def __init__(self, expect_header: bool = True, header: ShardHeader | None = None,
                 first_segment: int = 0) -> None:
        self._buf = bytearray()
        self.header = header
        self._need_header = expect_header
        self.segment = first_segment

    def feed(self, data: bytes | memoryview) -> list[tuple[int, bytes]]:
        """Return the (segment number, block) frames completed by `data`, verified."""
        self._buf += data
        out: list[tuple[int, bytes]] = []
        if self._need_header:
            if len(self._buf) < HEADER_BYTES:
                return out
            self.header = ShardHeader.unpack(bytes(self._buf[:HEADER_BYTES]))
            del self._buf[:HEADER_BYTES]
            self._need_header = False
        assert self.header is not None
        while len(self._buf) >= FRAME_HEAD_BYTES:
            length, crc = FRAME_HEAD.unpack_from(self._buf)
            if length > self.header.block_size or length == 0:
                raise IntegrityError(f"frame {self.segment} has bad length {length}")
            end = FRAME_HEAD_BYTES + length
            if len(self._buf) < end:
                break
            with memoryview(self._buf) as mv:
                block = bytes(mv[FRAME_HEAD_BYTES:end])  # one copy (a slice would be two)
            del self._buf[:end]
            verify_frame(self.header, self.segment, block, crc)
            out.append((self.segment, block))
            self.segment += 1
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)
