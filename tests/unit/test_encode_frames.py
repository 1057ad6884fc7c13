"""`StripeCodec.encode_frames`: the frames of one segment built in place in one buffer
(ciphertext encrypted into the data blocks' places, parity coded into theirs, heads packed
in front) are byte for byte the frames `encode` builds with a copy per block, for every
length around the block and tag boundaries, both erasure backends and several widths."""

from __future__ import annotations

import os

import pytest

from storage.crypto.aead import SegmentCipher
from storage.erasure import ErasureCodec
from storage.pipeline import StripeCodec
from storage.shards.auth import TRAILER_BYTES
from storage.shards.format import FRAME_HEAD_BYTES, FrameReader
from storage.shards.slot import HEAD_ROOM

LENGTHS = [1, 15, 16, 17, 1000, 12345, 65536 - 16, 65536 - 1, 65536]


def _codec(k: int, m: int, backend: str, cipher: bool = True) -> StripeCodec:
    return StripeCodec(SegmentCipher(os.urandom(32)) if cipher else None,
                       ErasureCodec(k, m, backend), "bucket/key/v1", 1, os.urandom(16), 65536)


@pytest.mark.parametrize("backend", ["auto", "zfec"])
@pytest.mark.parametrize(("k", "m"), [(4, 2), (2, 1), (6, 3)])
def test_frames_built_in_place_equal_the_copied_ones(backend: str, k: int, m: int) -> None:
    codec = _codec(k, m, backend)
    headers = codec.headers()
    for n in LENGTHS:
        plain = os.urandom(n)
        for last in (False, True):
            old = codec.encode(headers, 7, last, plain)
            new = codec.encode_frames(headers, 7, last, plain)
            assert [bytes(f) for f in new] == [bytes(f) for f in old], (n, last)


def test_the_frames_share_one_buffer_and_decode_back() -> None:
    codec = _codec(4, 2, "auto")
    headers = codec.headers()
    plain = os.urandom(50_000)
    frames = codec.encode_frames(headers, 3, True, plain)
    owners = {id(f.obj) for f in frames if isinstance(f, memoryview)}
    assert len(owners) == 1 and len(frames) == 6  # one allocation, no copy per block
    blocks = {}
    for i, (h, f) in enumerate(zip(headers, frames, strict=True)):
        reader = FrameReader(expect_header=False, header=h, first_segment=3)
        [(seg, block)] = reader.feed(bytes(f))  # head and crc32c checked
        assert seg == 3 and len(f) == FRAME_HEAD_BYTES + len(block)
        blocks[i] = block
    for drop in ((0, 1), (2, 5), (4, 5)):
        some = {i: b for i, b in blocks.items() if i not in drop}
        assert codec.decode(3, True, len(plain), some) == plain


def test_a_codec_without_a_cipher_re_codes_sealed_segments_as_encode_does() -> None:
    codec = _codec(4, 2, "auto", cipher=False)
    headers = codec.headers()
    sealed = os.urandom(65536 + 16)
    assert [bytes(f) for f in codec.encode_frames(headers, 0, True, sealed)] == \
        [bytes(f) for f in codec.encode(headers, 0, True, sealed)]


@pytest.mark.parametrize(("k", "m"), [(4, 2), (6, 3)])
def test_a_segment_given_in_pieces_is_never_joined_and_codes_the_same(
        k: int, m: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces split anywhere (across blocks, inside the tag's block, one byte long) code to
    the frames of the whole segment, and the frame buffer needs no zero fill: filled with
    0xAA first, every byte the frames hold is still the same."""
    import random

    import storage.pipeline as pipeline
    monkeypatch.setattr(pipeline, "uninitialized", lambda n: bytearray(b"\xaa" * n))
    codec = _codec(k, m, "auto")
    headers = codec.headers()
    rng = random.Random(7)
    for n in LENGTHS:
        plain = os.urandom(n)
        cuts = sorted({0, n, *(rng.randrange(n + 1) for _ in range(rng.randrange(1, 9)))})
        pieces: list[bytes | memoryview] = [memoryview(plain)[a:z] for a, z in
                                            zip(cuts, cuts[1:], strict=False)]
        for last in (False, True):
            old = codec.encode(headers, 5, last, plain)
            assert [bytes(f) for f in codec.encode_frames(headers, 5, last, pieces)] == \
                [bytes(f) for f in old], (n, last, cuts)
            assert [bytes(f) for f in codec.encode_frames(headers, 5, last, plain)] == \
                [bytes(f) for f in old], (n, last)


@pytest.mark.parametrize(("k", "m"), [(4, 2), (6, 3)])
def test_slots_hold_the_shard_files_encode_builds_with_room_around_them(
        k: int, m: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """`encode_slots` (a whole one-segment stripe, the 1 MiB PUT): each slot's body is
    `header.pack() + frame` of `encode`, from pieces or whole, with no zero fill; all slots
    share one buffer; the room before each body and the trailer's place after it are free
    for the request (`ShardSlot.request` puts head and trailer there, same bytes as the
    pieces joined), and a head longer than the room is refused."""
    import random

    import storage.pipeline as pipeline
    monkeypatch.setattr(pipeline, "uninitialized", lambda n: bytearray(b"\xaa" * n))
    codec = _codec(k, m, "auto")
    headers = codec.headers()
    rng = random.Random(11)
    for n in LENGTHS:
        plain = os.urandom(n)
        cuts = sorted({0, n, *(rng.randrange(n + 1) for _ in range(rng.randrange(1, 6)))})
        pieces: list[bytes | memoryview] = [plain[a:z] for a, z in zip(cuts, cuts[1:],
                                                                        strict=False)]
        want = [h.pack() + f for h, f in zip(headers, codec.encode(headers, 0, True, plain),
                                             strict=True)]
        for given in (pieces, [plain]):
            slots = codec.encode_slots(headers, given)
            assert [bytes(s.body) for s in slots] == want, (n, cuts)
            assert len({id(s.view.obj) for s in slots}) == 1
            assert all(s.room == HEAD_ROOM for s in slots)
    head, trailer = b"PUT /x HTTP/1.1\r\n\r\n", os.urandom(TRAILER_BYTES)
    whole = slots[2].request(head, trailer)
    assert whole is not None and bytes(whole) == head + want[2] + trailer
    assert bytes(slots[3].body) == want[3]  # the neighbours untouched
    assert slots[4].request(b"h" * (HEAD_ROOM + 1), trailer) is None


def test_slots_of_a_codec_without_a_cipher_hold_the_same_files() -> None:
    codec = _codec(4, 2, "auto", cipher=False)
    headers = codec.headers()
    sealed = os.urandom(65536 + 16)
    want = [h.pack() + f for h, f in zip(headers, codec.encode(headers, 0, True, sealed),
                                         strict=True)]
    assert [bytes(s.body) for s in codec.encode_slots(headers, [sealed])] == want


def test_a_second_request_of_a_slot_never_rewrites_bytes_a_send_may_still_read() -> None:
    """The first request of a slot is written into the stripe's buffer and handed to a
    transport, which (Python 3.12+) may keep a view of its unsent bytes; a retry's request
    (new head, new trailer) is a new buffer, and the first view's bytes stay as sent."""
    codec = _codec(4, 2, "auto")
    headers = codec.headers()
    slot = codec.encode_slots(headers, [os.urandom(100_000)])[1]
    first = slot.request(b"PUT /a HTTP/1.1\r\n\r\n", b"\x01" * TRAILER_BYTES)
    assert first is not None and first.obj is slot.view.obj  # in place: no copy
    sent = bytes(first)
    retry = slot.request(b"PUT /b HTTP/1.1\r\nx: y\r\n\r\n", b"\x02" * TRAILER_BYTES)
    assert retry is not None and retry.obj is not slot.view.obj
    assert bytes(retry) == b"PUT /b HTTP/1.1\r\nx: y\r\n\r\n" + bytes(slot.body) + b"\x02" * 16
    assert bytes(first) == sent  # what the first send may still be reading is unchanged
