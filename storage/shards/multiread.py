"""POST /v1/stream: many whole shards from one node in one authenticated request.

Repair reads whole source shards of many stripes from each node. As one GET each, a node
pays the HTTP, signature and thread-hop cost per shard; here one request names up to
`MAX_STREAM_IDS` shards (msgpack `{"ids": [...]}`, its SHA-256 covered by the request
signature as for /v1/batch), and the answer carries them back to back, each after a record
head: status (u16), segments (u32), length (u64) and the crc32c of those 14 bytes, so a
damaged or misread length is detected instead of misframing the rest of the stream. A
200 record is followed by `length` bytes: the whole shard file (header + frames), every
frame checked on the node before its record head is sent, then sent with sendfile. Any
other status (404 missing, 409 corrupt and quarantined, 413 larger than one verified
window, 500 I/O error) has no bytes. The client checks every frame's checksum and the
header's stripe and index again (`storage.shards.streamread`), as for a single GET.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import crc32c
import msgpack

from storage.errors import IntegrityError

STREAM_PATH = "/v1/stream"
MAX_STREAM_IDS = 256
MAX_STREAM_BODY = 64 * 1024  # the request body: the ids
_RECORD = struct.Struct(">HIQ")
RECORD_BYTES = _RECORD.size + 4


def pack_record(status: int, segments: int, length: int) -> bytes:
    """One record head: what follows it, and a checksum of the head itself."""
    head = _RECORD.pack(status, segments, length)
    return head + crc32c.crc32c(head).to_bytes(4, "big")


def parse_record(raw: bytes) -> tuple[int, int, int]:
    """(status, segments, length) of a record head; IntegrityError when it is damaged."""
    head, crc = raw[:_RECORD.size], raw[_RECORD.size:RECORD_BYTES]
    if len(raw) != RECORD_BYTES or crc32c.crc32c(head).to_bytes(4, "big") != crc:
        raise IntegrityError("stream record head fails its checksum")
    status, segments, length = _RECORD.unpack(head)
    return status, segments, length


def request_body(ids: Sequence[str]) -> bytes:
    return msgpack.packb({"ids": list(ids)}, use_bin_type=True)


__all__ = ["MAX_STREAM_IDS", "RECORD_BYTES", "STREAM_PATH", "pack_record", "parse_record",
           "request_body"]
