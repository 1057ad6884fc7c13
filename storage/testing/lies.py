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

from storage.shards.format import (
    FRAME_HEAD,
    FRAME_HEAD_BYTES,
    HEADER_BYTES,
    ShardHeader,
    pack_frame,
)


def lie_about(path: Path, seed: int = 0, segments: int | None = 1) -> bytes:
    """Rewrite the blocks of the first `segments` frames (None: all) with random bytes and
    valid checksums, in place; returns the new file content (the lie)."""
    raw = bytearray(path.read_bytes())
    header = ShardHeader.unpack(bytes(raw[:HEADER_BYTES]))
    rnd = random.Random(f"lie/{seed}/{path.name}")
    off, seg = HEADER_BYTES, 0
    while off + FRAME_HEAD_BYTES <= len(raw) and (segments is None or seg < segments):
        length, _ = FRAME_HEAD.unpack_from(raw, off)
        block = rnd.randbytes(length)
        raw[off:off + FRAME_HEAD_BYTES + length] = pack_frame(header, seg, block)
        off += FRAME_HEAD_BYTES + length
        seg += 1
    tmp = path.with_name(path.name + ".lie")
    tmp.write_bytes(raw)
    os.replace(tmp, path)  # a node reading meanwhile sees the old or the new file, whole
    return bytes(raw)


__all__ = ["lie_about"]
