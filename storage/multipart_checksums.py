"""Multipart checksums: which type an upload gets, and the object checksum built from the
part checksums at Complete.

COMPOSITE (CRC32, CRC32C, SHA1, SHA256) is the checksum of the concatenated binary part
checksums plus `-N`; FULL_OBJECT (CRC32, CRC32C, CRC64NVME) combines the part CRCs
arithmetically (awscrt's crc combine), so it equals the CRC of the whole object.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from storage.errors import InvalidInput

COMPOSITE = "COMPOSITE"
FULL_OBJECT = "FULL_OBJECT"
CRC_ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME")
ALGORITHMS = (*CRC_ALGORITHMS, "SHA1", "SHA256")
# What S3 computes and stores (a FULL_OBJECT checksum) for an object, or a multipart upload,
# written without any checksum since its default integrity protections (2025). The one
# definition: gateway/s3/checksums re-exports it.
DEFAULT_ALGORITHM = "CRC64NVME"


def stored_type(checksums: dict[str, str], checksum_type: str | None) -> str | None:
    """An object version's checksum type from its stored fields: COMPOSITE or FULL_OBJECT,
    None without a checksum (a checksum with no type recorded is S3's default, FULL_OBJECT)."""
    return (checksum_type or FULL_OBJECT) if checksums else None


def checksum_type_for(algorithm: str | None, requested: str | None) -> str | None:
    """The checksum type an upload gets; raises InvalidInput for unsupported pairs."""
    if algorithm is None:
        if requested is not None:
            raise InvalidInput("The x-amz-checksum-type header can only be used with the "
                               "x-amz-checksum-algorithm header.")
        return None
    if algorithm not in ALGORITHMS:
        raise InvalidInput(f"unknown checksum algorithm {algorithm!r}")
    default = FULL_OBJECT if algorithm == "CRC64NVME" else COMPOSITE
    ctype = requested or default
    if ctype not in (COMPOSITE, FULL_OBJECT):
        raise InvalidInput(f"unknown checksum type {ctype!r}")
    if ctype == FULL_OBJECT and algorithm not in CRC_ALGORITHMS:
        raise InvalidInput(f"The {algorithm} checksum algorithm does not support the "
                           "FULL_OBJECT checksum type.")
    if ctype == COMPOSITE and algorithm == "CRC64NVME":
        raise InvalidInput("The CRC64NVME checksum algorithm does not support the COMPOSITE "
                           "checksum type.")
    return ctype


class Combiner:
    """Builds the object checksum from the part checksums, part by part."""

    def __init__(self, algorithm: str, ctype: str) -> None:
        self.algorithm = algorithm
        self.ctype = ctype
        self.count = 0
        self._crc = 0
        self._hash: Any = hashlib.sha1() if algorithm == "SHA1" else hashlib.sha256()

    def add(self, part_b64: str, size: int) -> None:
        # imported on first use: its library is ~5 MiB resident in every gateway worker
        from awscrt import checksums as crt

        raw = base64.b64decode(part_b64)
        self.count += 1
        if self.ctype == FULL_OBJECT:
            value = int.from_bytes(raw, "big")
            if self.count == 1:
                self._crc = value
            else:
                fn = {"CRC32": crt.combine_crc32, "CRC32C": crt.combine_crc32c,
                      "CRC64NVME": crt.combine_crc64nvme}[self.algorithm]
                self._crc = fn(self._crc, value, size)
        elif self.algorithm in CRC_ALGORITHMS:
            fn1 = {"CRC32": crt.crc32, "CRC32C": crt.crc32c}[self.algorithm]
            self._crc = fn1(raw, self._crc)
        else:
            self._hash.update(raw)

    def value(self) -> str:
        width = 8 if self.algorithm == "CRC64NVME" else 4
        if self.algorithm in CRC_ALGORITHMS:
            raw = self._crc.to_bytes(width, "big")
        else:
            raw = self._hash.digest()
        out = base64.b64encode(raw).decode()
        return f"{out}-{self.count}" if self.ctype == COMPOSITE else out
