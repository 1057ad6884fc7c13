"""The write path's segmenter (`storage.shardfeed.segments`) hands each segment on as the
chunks it was received in (memoryviews where a boundary falls inside a chunk), never a
joined copy: the encoder encrypts the pieces into place and the digests take them in turn."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from storage.shardfeed import segments as _segments


async def _chunks(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    at = 0
    for n in sizes:
        yield data[at:at + n]
        at += n
    if at < len(data):
        yield data[at:]


def _run(data: bytes, sizes: list[int], seg: int) -> list[tuple[list[bytes | memoryview], bool]]:
    async def main() -> list[tuple[list[bytes | memoryview], bool]]:
        return [s async for s in _segments(_chunks(data, sizes), seg)]
    return asyncio.run(main())


def test_segments_are_the_received_chunks_not_copies() -> None:
    data = os.urandom(10_000)
    sizes = [3000, 3000, 3000]  # the rest (1000) last; segments of 4000 cut chunks
    chunks: list[bytes] = []

    async def source() -> AsyncIterator[bytes]:
        async for c in _chunks(data, sizes):
            chunks.append(c)
            yield c

    async def main() -> list[tuple[list[bytes | memoryview], bool]]:
        return [s async for s in _segments(source(), 4000)]

    segs = asyncio.run(main())
    assert [b"".join(p) for p, _ in segs] == [data[:4000], data[4000:8000], data[8000:]]
    assert [last for _, last in segs] == [False, False, True]
    for pieces, _ in segs:
        for p in pieces:  # each piece is a chunk or a view of one: no byte was copied
            owner = p.obj if isinstance(p, memoryview) else p
            assert any(owner is c for c in chunks)


def test_every_length_around_the_boundaries_reassembles() -> None:
    for total in (0, 1, 3999, 4000, 4001, 8000, 12_345):
        data = os.urandom(total)
        for sizes in ([4000] * 4, [1] * 50 + [777] * 20, [9000], [3999, 2]):
            segs = _run(data, sizes, 4000)
            assert b"".join(b"".join(p) for p, _ in segs) == data
            assert all(sum(map(len, p)) == 4000 for p, _ in segs[:-1])
            assert [last for _, last in segs] == [False] * (len(segs) - 1) + [True] * bool(segs)


def test_a_reused_buffer_is_copied_not_held() -> None:
    """A source that yields one bytearray again and again (refilled each time): segments
    hold their pieces until coded and hashed, so such chunks must be copied."""
    import asyncio

    from storage.shardfeed import segments

    async def main() -> list[bytes]:
        buf = bytearray(3)

        async def source():  # type: ignore[no-untyped-def]
            for i in range(4):
                buf[:] = bytes([i]) * 3
                yield buf

        return [b"".join(bytes(p) for p in seg) async for seg, _ in segments(source(), 4)]

    assert asyncio.run(main()) == [b"\x00\x00\x00\x01", b"\x01\x01\x02\x02", b"\x02\x03\x03\x03"]
