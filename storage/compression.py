"""zstd compression of part streams (archive profiles), before encryption.

The plaintext is cut into blocks of at most `FRAME_BYTES`, each compressed as its own zstd
frame (frames are self-delimiting). Decompression therefore never produces more than one
block per step, whatever the compression ratio: memory stays bounded on both sides.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import zstandard

FRAME_BYTES = 1024 * 1024
LEVEL = 3


class _Counter:
    def __init__(self) -> None:
        self.plain = 0


def _compress_block(comp: zstandard.ZstdCompressor, block: bytes,
                    digests: Sequence[object]) -> bytes:
    for d in digests:
        d.update(block)  # type: ignore[attr-defined]
    return comp.compress(block)


async def compress_stream(source: AsyncIterator[bytes], digests: Sequence[object],
                          counter: _Counter) -> AsyncIterator[bytes]:
    """Yield zstd frames of the source; `digests` see the plaintext, `counter` its size."""
    comp = zstandard.ZstdCompressor(level=LEVEL, write_content_size=True)
    buf = bytearray()
    async for chunk in source:
        buf += chunk
        while len(buf) >= FRAME_BYTES:
            block = bytes(buf[:FRAME_BYTES])
            del buf[:FRAME_BYTES]
            counter.plain += len(block)
            yield await asyncio.to_thread(_compress_block, comp, block, digests)
    if buf:
        counter.plain += len(buf)
        yield await asyncio.to_thread(_compress_block, comp, bytes(buf), digests)


def _one_frame(dec: zstandard.ZstdDecompressor, obj: object, data: bytes,
               ) -> tuple[bytes, bytes, object]:
    """Decompress until the end of one frame or of `data`: (output, rest, decoder)."""
    piece = obj.decompress(data)  # type: ignore[attr-defined]
    if obj.eof:  # type: ignore[attr-defined]
        return piece, obj.unused_data, dec.decompressobj()  # type: ignore[attr-defined]
    return piece, b"", obj


async def decompress_stream(source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Plaintext of a stream of zstd frames, at most one frame (FRAME_BYTES) at a time."""
    dec = zstandard.ZstdDecompressor()
    obj: object = dec.decompressobj()
    async for chunk in source:
        data = bytes(chunk)
        while data:
            piece, data, obj = await asyncio.to_thread(_one_frame, dec, obj, data)
            if piece:
                yield piece


Counter = _Counter
