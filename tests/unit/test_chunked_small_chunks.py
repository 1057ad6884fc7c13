"""Tiny aws-chunked chunks: AWS refuses a signed chunk under 8 KiB that is not the last
(403 InvalidChunkSizeError with <Chunk>/<BadChunkSize>, sigv4-streaming.html), and the
decoder never hands on a piece per tiny chunk: held as views (184 bytes each), 1 MiB of
1-byte chunks pinned ~190 MiB of gateway memory until its segment was coded."""

from __future__ import annotations

import pytest

from gateway.s3.chunked import SMALL_PIECE, ChunkedDecoder
from gateway.s3.errors_map import to_s3_error
from gateway.s3.sigv4_fields import SigV4Error
from storage.buffers import Lent
from tests.unit.sigv4_support import decode_all
from tests.unit.test_sigv4_chunked import encode_chunked, streaming_auth

SIGNED = ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"]


def _signed(sha: str, chunks: list[bytes]) -> tuple[ChunkedDecoder, bytes]:
    """A decoder for a signed streaming body of ``chunks`` and that body (no trailer)."""
    auth = streaming_auth(sha)
    return ChunkedDecoder(auth, True, None), encode_chunked(chunks, auth)


@pytest.mark.parametrize("sha", SIGNED)
def test_a_small_signed_chunk_before_the_last_is_refused(sha: str) -> None:
    decoder, body = _signed(sha, [b"a" * 8192, b"b" * 8191, b"c" * 8192])
    with pytest.raises(SigV4Error) as err:
        decode_all(decoder, [body])
    assert err.value.code == "InvalidChunkSizeError"
    answer = to_s3_error(err.value, "b", "k")
    assert answer.status == 403
    assert answer.extra == {"Chunk": "3", "BadChunkSize": "8191"}


@pytest.mark.parametrize("sha", SIGNED)
def test_a_small_last_signed_chunk_is_accepted(sha: str) -> None:
    chunks = [b"x" * 8192, b"y" * 9000, b"hello"]
    decoder, body = _signed(sha, chunks)
    assert decode_all(decoder, [body]) == (b"".join(chunks), {})
    decoder, body = _signed(sha, [b"tiny"])  # a body of one small chunk
    assert decode_all(decoder, [body]) == (b"tiny", {})


def test_unsigned_tiny_chunks_are_refused() -> None:
    """S3 refuses a chunk under 8 KiB but the last in unsigned-trailer bodies too
    (STREAMING-UNSIGNED-PAYLOAD-TRAILER; its InvalidChunkSizeError is quoted in
    versitygw #1665/#2085): 403 InvalidChunkSizeError naming the chunk."""
    decoder = ChunkedDecoder(None, False, ["x-amz-checksum-crc32"])
    wire = b"1\r\nA\r\n" * 3 + b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    with pytest.raises(SigV4Error) as err:
        decode_all(decoder, [wire])
    assert err.value.code == "InvalidChunkSizeError"


@pytest.mark.parametrize("block", [6, 4096, 1 << 20])
def test_unsigned_chunks_fed_in_tiny_blocks_come_out_in_few_pieces(block: int) -> None:
    """64 KiB in 8 KiB chunks and a 1-byte last one, fed in Lent blocks of any size (6-byte
    blocks cut every chunk into pieces), comes out in about 64 KiB / SMALL_PIECE pieces,
    not one per block."""
    payload = bytes(range(256)) * 256 + b"!"
    sizes = [8192] * 8 + [1]
    wire, at = b"", 0
    for n in sizes:
        wire += f"{n:x}\r\n".encode() + payload[at : at + n] + b"\r\n"
        at += n
    wire += b"0\r\n\r\n"
    decoder = ChunkedDecoder(None, False, None)
    pieces = [p for i in range(0, len(wire), block) for p in decoder.feed(Lent(wire[i : i + block]))]
    decoder.finish()
    assert b"".join(pieces) == payload
    assert len(pieces) <= len(payload) // SMALL_PIECE + len(sizes) + 1, len(pieces)


def test_a_signed_chunk_fed_byte_by_byte_comes_out_in_few_pieces() -> None:
    chunks = [b"p" * 20000, b"q" * 8192, b"r" * 3]
    decoder, body = _signed(SIGNED[0], chunks)
    pieces = [p for i in range(len(body)) for p in decoder.feed(body[i : i + 1])]
    decoder.finish()
    assert b"".join(pieces) == b"".join(chunks)
    assert len(pieces) <= 10, len(pieces)
