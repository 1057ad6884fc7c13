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


def test_awscrt_is_loaded_only_by_the_checksums_that_need_it() -> None:
    """awscrt (CRC64NVME, multipart CRC combines) is ~5 MiB resident per gateway worker: a
    worker whose clients never send those checksums does not load it; one that does gets
    the same values as awscrt's own functions."""
    import subprocess
    import sys
    from pathlib import Path

    probe = ("import sys, gateway.app, gateway.__main__, gateway.s3.handlers.multipart, "
             "storage.cluster, storage.multipart; print('awscrt' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True, cwd=Path(__file__).resolve().parents[2],
                         ).stdout.split()
    assert out == ["False"]
    from awscrt import checksums as crt

    from gateway.s3.checksums import Checksum
    from storage.multipart_checksums import Combiner

    c = Checksum("CRC64NVME")
    c.update(b"hello ")
    c.update(b"world")
    assert base64.b64decode(c.value()) == crt.crc64nvme(b"hello world").to_bytes(8, "big")
    whole = Combiner("CRC32", "FULL_OBJECT")
    for part in (b"hello ", b"world"):
        whole.add(base64.b64encode(zlib.crc32(part).to_bytes(4, "big")).decode(), len(part))
    assert base64.b64decode(whole.value()) == zlib.crc32(b"hello world").to_bytes(4, "big")
