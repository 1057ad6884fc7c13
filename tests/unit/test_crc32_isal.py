"""The S3 CRC32 checksum through ISA-L's kernel: the same values as zlib's, chained."""

from __future__ import annotations

import base64
import os
import random
import zlib

import pytest

from gateway.s3 import checksums
from storage import isal

LIB = isal.load()
needs_crc = pytest.mark.skipif(LIB is None or not LIB.has_crc32,
                               reason="no ISA-L with crc32_gzip_refl installed")


@needs_crc
def test_isal_crc32_equals_zlib_for_any_buffer_and_chain() -> None:
    assert LIB is not None
    rng = random.Random(17)
    data = os.urandom(300_000)
    for size in (0, 1, 15, 16, 63, 64, 65, 2047, 2048, 4096, 65_537, 300_000):
        piece = data[:size]
        assert LIB.crc32(piece) == zlib.crc32(piece)
        assert LIB.crc32(bytearray(piece), 0x1234) == zlib.crc32(piece, 0x1234)
        assert LIB.crc32(memoryview(data)[7:7 + size]) == zlib.crc32(data[7:7 + size])
    for _ in range(20):  # chained over random cuts, as a body's chunks arrive
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 6)))
        value = 0
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            value = LIB.crc32(memoryview(data)[a:b], value)
        assert value == zlib.crc32(data)


@needs_crc
def test_s3_crc32_checksum_takes_the_isal_kernel() -> None:
    assert checksums._CRC32 is not zlib.crc32
    data = os.urandom(1 << 20)
    c = checksums.Checksum("CRC32")
    for a in range(0, len(data), 262_144 - 5):  # large and small pieces
        c.update(memoryview(data)[a:a + 262_144 - 5])
    c.update(b"tail")
    want = zlib.crc32(data + b"tail").to_bytes(4, "big")
    assert c.value() == base64.b64encode(want).decode()


def test_s3_crc32_checksum_of_small_pieces_and_nothing() -> None:
    c = checksums.Checksum("crc32")
    assert c.value() == base64.b64encode(bytes(4)).decode()
    for piece in (b"a", b"bc", b"", b"d" * 3000):
        c.update(piece)
    want = zlib.crc32(b"abc" + b"d" * 3000).to_bytes(4, "big")
    assert c.value() == base64.b64encode(want).decode()


@pytest.mark.skipif(LIB is None or not LIB.has_crc64nvme,
                    reason="no ISA-L with crc64_rocksoft_refl installed")
def test_isal_crc64nvme_equals_awscrt_for_any_buffer_and_chain() -> None:
    """S3's default checksum (every object written without one) goes through ISA-L's
    rocksoft CRC64, the same polynomial as CRC64NVME: awscrt's values, chained."""
    from awscrt import checksums as crt

    assert LIB is not None
    rng = random.Random(19)
    data = os.urandom(300_000)
    for size in (0, 1, 15, 16, 63, 64, 65, 2047, 4096, 65_537, 300_000):
        assert LIB.crc64nvme(data[:size]) == crt.crc64nvme(data[:size])
        assert LIB.crc64nvme(memoryview(data)[7:7 + size], 0x1234) == crt.crc64nvme(
            data[7:7 + size], 0x1234)
    for _ in range(10):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 6)))
        value = 0
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            value = LIB.crc64nvme(memoryview(data)[a:b], value)
        assert value == crt.crc64nvme(data)
    c = checksums.Checksum("CRC64NVME")
    c.update(data[:1000])
    c.update(memoryview(data)[1000:])
    assert c.value() == base64.b64encode(crt.crc64nvme(data).to_bytes(8, "big")).decode()
