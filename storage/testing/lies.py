"""Make a shard file lie: other bytes under valid frame checksums (tests and `tessera chaos`).

A node holds no keys, so it checks only each frame's crc32c; a shard rewritten with wrong
blocks whose checksums are recomputed passes every node check (read, verify, scrub) and
only the GCM tag at the gateway can tell. This is the fault a buggy disk, a bad node or a
replayed write produces.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Protocol

from storage.shards.format import (
    FRAME_HEAD,
    FRAME_HEAD_BYTES,
    HEADER_BYTES,
    ShardHeader,
    pack_frame,
)


def lie(raw: bytes, seed: object = 0, segments: int | None = 1) -> bytes:
    """A shard file's bytes with the blocks of the first `segments` frames (None: all)
    replaced by seeded random bytes under valid checksums."""
    out = bytearray(raw)
    header = ShardHeader.unpack(bytes(out[:HEADER_BYTES]))
    rnd = random.Random(f"lie/{seed}")
    off, seg = HEADER_BYTES, 0
    while off + FRAME_HEAD_BYTES <= len(out) and (segments is None or seg < segments):
        length, _ = FRAME_HEAD.unpack_from(out, off)
        out[off:off + FRAME_HEAD_BYTES + length] = pack_frame(header, seg, rnd.randbytes(length))
        off += FRAME_HEAD_BYTES + length
        seg += 1
    return bytes(out)


class ShardBytes(Protocol):
    """A shard as tests hold it: a file's Path, or a packed record (tests.held_shards)."""

    @property
    def name(self) -> str: ...

    def read_bytes(self) -> bytes: ...

    def write_bytes(self, data: bytes) -> object: ...


def lie_about(path: Path | ShardBytes, seed: int = 0, segments: int | None = 1) -> bytes:
    """Make the shard at `path` lie (`lie`), in place; returns its new content. A packed
    shard's record is rewritten in place by its own `write_bytes` (same length)."""
    raw = lie(path.read_bytes(), f"{seed}/{path.name}", segments)
    if not isinstance(path, Path):
        path.write_bytes(raw)
        return raw
    tmp = path.with_name(path.name + ".lie")
    tmp.write_bytes(raw)
    os.replace(tmp, path)  # a node reading meanwhile sees the old or the new file, whole
    return raw


__all__ = ["lie", "lie_about"]
