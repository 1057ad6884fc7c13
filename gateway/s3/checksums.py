"""The additional checksums S3 clients send: CRC32, CRC32C, CRC64NVME, SHA1, SHA256.

Each is an object with `update(bytes)` and a base64 `value()`, computed off the event loop
alongside the MD5 of the body.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import zlib
from collections.abc import Callable

import crc32c as _crc32c

from gateway.s3.errors import S3Error
from storage import isal
from storage.multipart_checksums import DEFAULT_ALGORITHM as DEFAULT_ALGORITHM

ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
HEADER = {a: f"x-amz-checksum-{a.lower()}" for a in ALGORITHMS}
# Algorithms AWS documents that are not computed here: a digest sent in one of their headers
# (or named as a trailer) is refused, never accepted unchecked.
UNCHECKED = ("SHA512", "MD5", "XXHASH64", "XXHASH3", "XXHASH128")
UNCHECKED_HEADERS = frozenset(f"x-amz-checksum-{a.lower()}" for a in UNCHECKED)


class _Crc:
    def __init__(self, fn, width: int) -> None:  # type: ignore[no-untyped-def]
        self._fn = fn
        self._width = width
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = self._fn(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width, "big")


_SHORT = 2048  # below this zlib's call is cheaper than ISA-L's ctypes one


def _crc32_fn() -> Callable[[bytes, int], int]:
    """CRC32 with ISA-L's kernel when it is installed (the same values as zlib's)."""
    lib = isal.load()
    if lib is None or not lib.has_crc32:
        return zlib.crc32
    fast = lib.crc32

    def crc32(data: bytes, value: int = 0) -> int:
        return zlib.crc32(data, value) if len(data) < _SHORT else fast(data, value)
    return crc32


_CRC32 = _crc32_fn()


@functools.cache
def _crc64nvme_fn() -> Callable[[bytes, int], int]:
    """CRC64NVME with ISA-L's kernel when it has one, else awscrt's (imported only then: its
    library is ~5 MiB resident in every gateway worker)."""
    lib = isal.load()
    if lib is not None and lib.has_crc64nvme:
        return lib.crc64nvme
    from awscrt import checksums as crt

    return crt.crc64nvme  # type: ignore[no-any-return]


class Checksum:
    """One running checksum of a named algorithm."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm.upper()
        if self.algorithm == "CRC32":
            self._h: object = _Crc(_CRC32, 4)
        elif self.algorithm == "CRC32C":
            self._h = _Crc(lambda d, v: _crc32c.crc32c(d, v), 4)
        elif self.algorithm == "CRC64NVME":
            self._h = _Crc(_crc64nvme_fn(), 8)
        elif self.algorithm == "SHA1":
            self._h = hashlib.sha1()
        elif self.algorithm == "SHA256":
            self._h = hashlib.sha256()
        else:
            raise ValueError(f"unknown checksum algorithm {algorithm!r}")

    def update(self, data: bytes) -> None:
        self._h.update(data)  # type: ignore[attr-defined]

    def value(self) -> str:
        return base64.b64encode(self._h.digest()).decode()  # type: ignore[attr-defined]


DIGEST_BYTES = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32}


def from_headers(headers: object, parts: int | None = None) -> dict[str, str]:
    """Checksums announced in request headers: algorithm -> base64 value. A value that is not
    the base64 of a digest of its algorithm's size is 400 InvalidRequest, as S3 answers (not
    BadDigest: nothing was compared). Only a CompleteMultipartUpload of `parts` parts may add
    a composite suffix, and then exactly `-<parts>`."""
    for name in UNCHECKED_HEADERS:
        if name in headers:  # type: ignore[operator]
            refuse_unchecked(name)
    out = {}
    for alg, name in HEADER.items():
        v = headers.get(name)  # type: ignore[attr-defined]
        if v:
            digest, dash, suffix = v.partition("-")
            try:
                if dash and (parts is None or suffix != str(parts)):
                    raise ValueError(suffix)
                size = len(base64.b64decode(digest, validate=True))
            except ValueError:
                size = -1
            if size != DIGEST_BYTES[alg]:
                raise S3Error("InvalidRequest", f"Value for {name} header is invalid.")
            out[alg] = v
    return out


def check_announced(alg: str | None, name: str, expected: dict[str, str],
                    announced: set[str], trailed: bool = False) -> None:
    """Check a write's declared algorithm (`name`: PutObject's x-amz-sdk-checksum-algorithm
    header, or POST's x-amz-checksum-algorithm field) against its `expected` digests, as S3
    does: an unknown algorithm, one other than the digest sent, or one with no digest (nor
    trailer) is 400 InvalidRequest; more than one algorithm in `announced` is refused too."""
    if alg:
        if alg.upper() not in ALGORITHMS or (expected and alg.upper() not in expected):
            raise S3Error("InvalidRequest", f"Value for {name} header is invalid.")
        announced.add(alg.upper())
        if not expected and not trailed:  # AWS: 400, the SDKs never send it
            raise S3Error("InvalidRequest", f"{name} specified, but no corresponding "
                          "x-amz-checksum-* or x-amz-trailer headers were found.")
    if len(announced) > 1:
        raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header. "
                      "Multiple checksum Types are not allowed.")


def algorithm_of_header(name: str) -> str | None:
    name = name.lower()
    for alg, h in HEADER.items():
        if h == name:
            return alg
    return None


def refuse_unchecked(name: str) -> None:
    """A digest header (or trailer) of an algorithm in UNCHECKED: 501 NotImplemented naming
    it, as S3 answers a header it does not implement; its value could not be compared."""
    raise S3Error("NotImplemented", Header=name)
