"""gateway.s3.sigv4 with aws-chunked bodies: every split and truncation, signed trailers,
framing errors and limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import zlib
from datetime import UTC, datetime

import botocore.session
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.s3.chunked import SMALL_PIECE, ChunkedDecoder
from gateway.s3.sigv4 import AuthResult, authenticate
from gateway.s3.sigv4_fields import SigV4Error
from storage.buffers import Lent
from storage.shardfeed import holdable
from tests.unit.sigv4_support import (
    AK,
    EMPTY,
    ENDPOINT,
    SECRET,
    decode_all,
    expect_error,
    lookup,
)

# --------------------------------------------------------------------------- aws-chunked


def sign_chunk(auth: AuthResult, previous: str, data: bytes) -> str:
    """Independent chunk signature (AWS4-HMAC-SHA256-PAYLOAD)."""
    sts = "\n".join(
        [
            "AWS4-HMAC-SHA256-PAYLOAD",
            auth.amz_date,
            auth.scope,
            previous,
            EMPTY,
            hashlib.sha256(data).hexdigest(),
        ]
    )
    return hmac.new(auth.signing_key, sts.encode(), hashlib.sha256).hexdigest()


def sign_trailer(auth: AuthResult, previous: str, trailers: list[tuple[str, str]]) -> str:
    """Independent trailer signature (AWS4-HMAC-SHA256-TRAILER)."""
    canonical = "".join(f"{n}:{v}\n" for n, v in trailers).encode()
    sts = "\n".join(
        [
            "AWS4-HMAC-SHA256-TRAILER",
            auth.amz_date,
            auth.scope,
            previous,
            hashlib.sha256(canonical).hexdigest(),
        ]
    )
    return hmac.new(auth.signing_key, sts.encode(), hashlib.sha256).hexdigest()


def encode_chunked(
    chunks: list[bytes],
    auth: AuthResult | None = None,
    trailers: list[tuple[str, str]] | None = None,
    sign_trailers: bool = False,
) -> bytes:
    """Build an aws-chunked body, signed when ``auth`` is given."""
    out = bytearray()
    previous = auth.signature if auth else ""
    for data in [*chunks, b""]:
        if auth is not None:
            previous = sign_chunk(auth, previous, data)
            out += f"{len(data):x};chunk-signature={previous}\r\n".encode()
        else:
            out += f"{len(data):x}\r\n".encode()
        if data:
            out += data + b"\r\n"
    if trailers is None:
        out += b"\r\n"
        return bytes(out)
    for name, value in trailers:
        out += f"{name}:{value}\r\n".encode()
    if sign_trailers:
        assert auth is not None
        out += f"x-amz-trailer-signature:{sign_trailer(auth, previous, trailers)}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


def streaming_auth(content_sha256: str, extra: dict[str, str] | None = None) -> AuthResult:
    """AuthResult for a botocore-signed streaming PUT with the given payload mode."""
    headers = {
        "X-Amz-Content-SHA256": content_sha256,
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": "13",
        **(extra or {}),
    }
    request = AWSRequest(method="PUT", url=f"{ENDPOINT}/bucket/stream.bin", headers=headers)
    botocore.auth.S3SigV4Auth(Credentials(AK, SECRET), "s3", "us-east-1").add_auth(request)
    sent = dict(request.headers.items())
    if not any(k.lower() == "host" for k in sent):
        sent["Host"] = "127.0.0.1:9000"
    now = datetime.strptime(sent["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return authenticate("PUT", "/bucket/stream.bin", [], sent, lookup, now)


FILL = bytes(range(256)) * 32  # every signed chunk but the last is at least 8 KiB (AWS)
CHUNKS = [b"hello" + FILL, b" wor" + FILL[::-1], b"ld!\r\n"]
PAYLOAD = b"".join(CHUNKS)
CRC = base64.b64encode(zlib.crc32(PAYLOAD).to_bytes(4, "big")).decode()


def _modes() -> list[tuple[str, bool, list[str] | None, bool]]:
    """(x-amz-content-sha256, signed, trailer names, signed trailer) per streaming mode."""
    return [
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", True, None, False),
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", True, ["x-amz-checksum-crc32"], True),
        ("STREAMING-UNSIGNED-PAYLOAD-TRAILER", False, ["x-amz-checksum-crc32"], False),
        ("UNSIGNED-PAYLOAD", False, None, False),
    ]


def _body_for(mode: tuple[str, bool, list[str] | None, bool]) -> tuple[AuthResult, bytes]:
    sha, signed, names, sign_trailers = mode
    extra = {"x-amz-trailer": names[0]} if names else None
    auth = streaming_auth(sha, extra)
    trailers = [("x-amz-checksum-crc32", CRC)] if names else None
    body = encode_chunked(CHUNKS, auth if signed else None, trailers, sign_trailers)
    return auth, body


def _cuts(body: bytes) -> list[int]:
    """Offsets worth cutting at: all framing and the 16 bytes at each end of a chunk's
    data (deep inside the data every cut is alike), plus a sparse sample of the rest."""
    inner = []
    for data in CHUNKS:
        start = body.find(data)
        inner.append((start + 16, start + len(data) - 16))
    return [i for i in range(len(body) + 1)
            if i % 997 == 0 or not any(a <= i <= b for a, b in inner)]


@pytest.mark.parametrize("mode", _modes(), ids=lambda m: m[0])
def test_chunked_split_at_every_offset(mode: tuple[str, bool, list[str] | None, bool]) -> None:
    auth, body = _body_for(mode)
    _, signed, names, _ = mode
    expected_trailers = {"x-amz-checksum-crc32": CRC} if names else {}
    for cut in range(len(body) + 1):
        decoder = ChunkedDecoder(auth, signed, names)
        assert decode_all(decoder, [body[:cut], body[cut:]]) == (PAYLOAD, expected_trailers)
    cuts = _cuts(body)
    for a in cuts[::5]:
        for b in [c for c in cuts[::3] if c >= a]:
            decoder = ChunkedDecoder(auth, signed, names)
            pieces = [body[:a], body[a:b], body[b:]]
            assert decode_all(decoder, pieces) == (PAYLOAD, expected_trailers)
    decoder = ChunkedDecoder(auth, signed, names)
    pieces = [body[i : i + 1] for i in range(len(body))]
    assert decode_all(decoder, pieces) == (PAYLOAD, expected_trailers)


@pytest.mark.parametrize("mode", _modes(), ids=lambda m: m[0])
def test_chunked_truncated_everywhere(mode: tuple[str, bool, list[str] | None, bool]) -> None:
    auth, body = _body_for(mode)
    _, signed, names, _ = mode
    for cut in range(len(body)):
        decoder = ChunkedDecoder(auth, signed, names)
        decoder.feed(body[:cut])
        expect_error("IncompleteBody", decoder.finish)


def test_unsigned_chunks_stream_mid_chunk() -> None:
    """Unsigned data is released as it comes, a short piece once SMALL_PIECE bytes of them
    gathered or the data ended."""
    decoder = ChunkedDecoder(None, False, None)
    assert b"".join(decoder.feed(b"3000;")) == b""
    out = decoder.feed(b"chunk-signature=" + b"0" * 64 + b"\r\n" + b"a" * 5000)
    assert b"".join(out) == b"a" * 5000
    assert decoder.decoded_bytes == 5000
    assert decoder.feed(b"bcd") == []  # short: gathered, not yet released
    out = decoder.feed(b"e" * (SMALL_PIECE - 3))
    assert b"".join(out) == b"bcd" + b"e" * (SMALL_PIECE - 3)
    assert decoder.decoded_bytes == 5000 + SMALL_PIECE
    rest = 0x3000 - 5000 - SMALL_PIECE
    assert b"".join(decoder.feed(b"f" * rest)) == b""
    assert b"".join(decoder.feed(b"\r\n0\r\n\r\n")) == b"f" * rest
    assert decoder.finish() == {}


@pytest.mark.parametrize("mode", _modes()[:3], ids=lambda m: m[0])
def test_payload_is_views_of_the_fed_blocks(mode: tuple[str, bool, list[str] | None, bool],
                                            ) -> None:
    """Fed `Lent` blocks (the direct receive's), the payload comes out as views of them,
    signed chunks too (held until verified, then released as they are): no byte of a
    piece of SMALL_PIECE bytes or more is copied, and `shardfeed.holdable` keeps each view
    as it is. Shorter pieces come out copied, gathered into one."""
    auth, body = _body_for(mode)
    _, signed, names, _ = mode
    for cut in _cuts(body)[1:-1]:
        blocks = [Lent(body[:cut]), Lent(body[cut:])]
        decoder = ChunkedDecoder(auth, signed, names)
        pieces = [p for blk in blocks for p in decoder.feed(blk)]
        assert decoder.finish() == ({"x-amz-checksum-crc32": CRC} if names else {})
        assert b"".join(pieces) == PAYLOAD
        assert all(type(p) is memoryview for p in pieces)
        assert all(any(p.obj is blk for blk in blocks) == (len(p) >= SMALL_PIECE)
                   for p in pieces), [(len(p), type(p.obj)) for p in pieces]
        assert sum(len(p) < SMALL_PIECE for p in pieces) <= 2
        assert all(holdable(p) is p for p in pieces)
    reused = bytearray(b"abc")  # a view of a buffer that may change is copied
    assert type(holdable(memoryview(reused))) is bytes and type(holdable(reused)) is bytes


def test_mutable_input_buffers_are_not_aliased() -> None:
    decoder = ChunkedDecoder(None, False, None)
    data = b"abc" * SMALL_PIECE  # long enough to come out uncopied (were it a bytes)
    buf = bytearray(b"%x\r\n" % len(data) + data)
    out = decoder.feed(buf)
    buf[:] = b"zzzzzz"
    buf.clear()
    assert b"".join(out) == data


def test_signed_trailer_forgeries() -> None:
    mode = _modes()[1]
    auth, body = _body_for(mode)
    names = ["x-amz-checksum-crc32"]
    decode_all(ChunkedDecoder(auth, True, names), [body])
    # checksum value changed after signing
    forged = body.replace(CRC.encode(), b"AAAAAA==")
    expect_error("SignatureDoesNotMatch", lambda: ChunkedDecoder(auth, True, names).feed(forged))
    # trailer signature removed
    no_sig = encode_chunked(CHUNKS, auth, [("x-amz-checksum-crc32", CRC)], sign_trailers=False)
    expect_error("SignatureDoesNotMatch", lambda: ChunkedDecoder(auth, True, names).feed(no_sig))
    # trailer signature computed over different trailer bytes
    wrong = encode_chunked(CHUNKS, auth, [("x-amz-checksum-crc32", "AAAAAA==")], True)
    wrong = wrong.replace(b"AAAAAA==", CRC.encode())
    expect_error("SignatureDoesNotMatch", lambda: ChunkedDecoder(auth, True, names).feed(wrong))


def test_trailer_announcement_rules() -> None:
    names = ["x-amz-checksum-crc32"]
    missing = encode_chunked(CHUNKS, None, [])
    expect_error("IncompleteBody", lambda: ChunkedDecoder(None, False, names).feed(missing))
    undeclared = encode_chunked(CHUNKS, None, [("x-amz-checksum-crc32", CRC), ("x-evil", "1")])
    expect_error("InvalidRequest", lambda: ChunkedDecoder(None, False, names).feed(undeclared))
    unexpected = encode_chunked(CHUNKS, None, [("x-amz-checksum-crc32", CRC)])
    expect_error("InvalidRequest", lambda: ChunkedDecoder(None, False, None).feed(unexpected))
    duplicated = encode_chunked(
        CHUNKS, None, [("x-amz-checksum-crc32", CRC), ("x-amz-checksum-crc32", CRC)]
    )
    expect_error("InvalidRequest", lambda: ChunkedDecoder(None, False, names).feed(duplicated))
    assert unexpected.endswith(b"\r\n\r\n")
    spoofed_sig = unexpected[:-2] + b"x-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n"
    expect_error("InvalidRequest", lambda: ChunkedDecoder(None, False, names).feed(spoofed_sig))
    # names are matched case-insensitively
    decoder = ChunkedDecoder(None, False, ["X-Amz-Checksum-CRC32"])
    assert decode_all(decoder, [unexpected.replace(b"x-amz-checksum", b"X-Amz-Checksum")])[1] == {
        "x-amz-checksum-crc32": CRC
    }


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\n",  # not hex
        b"0x5\r\nhello\r\n0\r\n\r\n",  # python-style prefix
        b"1_0\r\n",  # underscores
        b"+5\r\n",
        b"5\nhello\r\n",  # bare LF
        b"5;foo=bar\r\nhello\r\n",  # unknown extension
        b"5;chunk-signature=abc\r\n",  # short signature
        b"5\r\nhelloXX0\r\n\r\n",  # missing CRLF after data
        b"0\r\n\r\nextra",  # trailing garbage
        b"0\r\nnot a trailer\r\n\r\n",
        b"1" * 2000,  # endless header line
    ],
)
def test_malformed_framing(body: bytes) -> None:
    decoder = ChunkedDecoder(None, False, None)
    with pytest.raises(SigV4Error) as info:
        decoder.feed(body)
        decoder.finish()
    assert info.value.code in {"InvalidRequest", "IncompleteBody"}


def test_chunk_size_limit_and_bounded_line_buffer() -> None:
    decoder = ChunkedDecoder(None, False, None, max_chunk_size=1024)
    expect_error("InvalidRequest", lambda: decoder.feed(b"401\r\n"))
    decoder = ChunkedDecoder(None, False, None, max_chunk_size=1024)
    assert decoder.feed(b"400\r\n") == []
    huge = ChunkedDecoder(None, False, None)
    huge.feed(b"1" * 1000)
    expect_error("InvalidRequest", lambda: huge.feed(b"1" * 100))
    assert len(huge._line) <= 1100  # never buffered the whole input
