"""x-amz-checksum-* request headers: the digest's form and the composite `-<parts>` suffix."""

from __future__ import annotations

import base64
import zlib

import pytest

from gateway.s3.checksums import from_headers
from gateway.s3.errors import S3Error

CRC = base64.b64encode(zlib.crc32(b"hi").to_bytes(4, "big")).decode()


def _code(value: str, parts: int | None) -> str | None:
    try:
        from_headers({"x-amz-checksum-crc32": value}, parts)
    except S3Error as e:
        return e.code
    return None


def test_composite_suffix_only_with_its_part_count() -> None:
    assert from_headers({"x-amz-checksum-crc32": CRC}) == {"CRC32": CRC}
    assert from_headers({"x-amz-checksum-crc32": CRC}, 2) == {"CRC32": CRC}
    assert from_headers({"x-amz-checksum-crc32": CRC + "-2"}, 2) == {"CRC32": CRC + "-2"}
    for value, parts in ((CRC + "-1", None), (CRC + "-", 2), (CRC + "-02", 2), (CRC + "-7", 2),
                         (CRC + "-2-2", 2), (CRC + "-x", 2), ("-2", 2)):
        assert _code(value, parts) == "InvalidRequest", (value, parts)


@pytest.mark.parametrize("value", ["zz", "AAAA", "AAAAAA==="])
def test_malformed_digest(value: str) -> None:
    assert _code(value, None) == "InvalidRequest"
