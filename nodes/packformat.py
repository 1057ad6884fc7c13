"""Pack file record format: many whole shards appended to one file (issue 17), and the scan
that rebuilds a pack's record list after a restart or a crash.

A pack (`<disk>/packs/<seq:016x>.pack`) is a sequence of records, nothing else:

    head     48 B  magic "TPKR", version, kind (PUT | TOMBSTONE), stripe id, shard index,
                   write time (ns, this host's clock: the orphan sweep's age), body length,
                   crc32c of the 44 bytes before it
    body     n B   a PUT's shard bytes exactly as a shard file holds them (shard header +
                   frames, each with its own crc32c), so bit rot is found without keys;
                   empty for a TOMBSTONE
    trailer  4 B   the head's crc32c again: the record is complete

A sealed pack ends with a FOOTER record (written once, at the seal) listing every record
before it, so a restart reads one record, not every head and trailer:

    body     count (4 B), per record 38 B (kind, index, stripe, write time, head offset,
             body length), crc32c of the above (4 B), the footer head's offset (8 B), "TPKF"
    trailer  as any record's

The pack's last 16 bytes (head offset, "TPKF", trailer) find it; `read_footer` checks its
head, trailer, body crc and that the records it lists tile the pack up to it, and gives None
for anything less (the caller scans instead). A scan sees a footer as a complete record.

Appends are made durable by one fdatasync per group of records, and a PUT is acknowledged only
after it, so only the tail of the newest pack can hold a torn record. `scan` keeps every
complete record; the tail from the first point after which no complete record follows is torn
(never acknowledged; the caller sets its bytes aside and truncates). Damage inside a pack is
reported, not guessed around: a record whose head verifies but whose trailer does not is `bad`
(skipped by its length), and bytes with no valid head are a `gap` up to the next complete
record. Pure functions over a `read_at(offset, n)` callable: no file, lock or clock here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import crc32c

from storage.shards.ids import shard_id

MAGIC = b"TPKR"
VERSION = 1
PUT = 1
TOMBSTONE = 2
FOOTER = 3  # a sealed pack's list of its records (last record; no shard)
KINDS = frozenset({PUT, TOMBSTONE, FOOTER})
FOOTER_MAGIC = b"TPKF"
NO_STRIPE = bytes(16)
_ENTRY = struct.Struct(">BB16sQQI")  # kind, index, stripe, time ns, head offset, body length
_FOOT_END = struct.Struct(">Q4s")  # the footer head's offset, FOOTER_MAGIC
_HEAD = struct.Struct(">4sBBH16sHHQQ")  # magic, version, kind, 0, stripe, index, 0, ns, len
_CRC = struct.Struct(">I")
HEAD_BYTES = _HEAD.size + _CRC.size  # 48
TRAILER_BYTES = _CRC.size
OVERHEAD = HEAD_BYTES + TRAILER_BYTES
MAX_BODY = 1 << 30  # no whole shard a node packs comes near; a larger length is not ours
SEARCH_CHUNK = 1 << 20  # bytes read at a time when looking for the next record after damage

ReadAt = Callable[[int, int], bytes]  # (offset, n) -> at most n bytes; fewer only at EOF


@dataclass(frozen=True)
class Record:
    """One complete record: where it is in its pack and what it says."""

    kind: int
    stripe: bytes
    index: int
    time_ns: int
    offset: int  # of the head
    body_len: int

    @property
    def shard_id(self) -> str:
        return shard_id(self.stripe, self.index)

    @property
    def body_offset(self) -> int:
        return self.offset + HEAD_BYTES

    @property
    def end(self) -> int:
        return self.offset + OVERHEAD + self.body_len


def encode_head(kind: int, stripe: bytes, index: int, time_ns: int, body_len: int) -> bytes:
    """The 48-byte head of a record (ValueError for fields no record may hold)."""
    if kind not in KINDS or len(stripe) != 16 or not 0 <= index <= 255 \
            or not 0 <= body_len <= MAX_BODY or (kind == TOMBSTONE and body_len) \
            or (kind == FOOTER and (stripe != NO_STRIPE or index)) \
            or not 0 <= time_ns < 1 << 64:
        raise ValueError("bad pack record fields")
    raw = _HEAD.pack(MAGIC, VERSION, kind, 0, stripe, index, 0, time_ns, body_len)
    return raw + _CRC.pack(crc32c.crc32c(raw))


def trailer_of(head: bytes) -> bytes:
    """The trailer that completes the record `head` starts: its crc32c repeated."""
    return bytes(head[HEAD_BYTES - TRAILER_BYTES:HEAD_BYTES])


def encode(kind: int, stripe: bytes, index: int, time_ns: int,
           body: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """A record as parts for one writev: head, the body's own buffers (no copy), trailer."""
    head = encode_head(kind, stripe, index, time_ns, sum(len(p) for p in body))
    return [head, *body, trailer_of(head)]


def decode_head(raw: bytes | memoryview, offset: int) -> Record | None:
    """The record a 48-byte head describes, or None when it is not a valid head."""
    if len(raw) < HEAD_BYTES:
        return None
    (crc,) = _CRC.unpack_from(raw, _HEAD.size)
    if crc32c.crc32c(bytes(raw[:_HEAD.size])) != crc:
        return None
    magic, version, kind, r1, stripe, index, r2, ns, n = _HEAD.unpack_from(raw)
    if magic != MAGIC or version != VERSION or kind not in KINDS or r1 or r2 \
            or index > 255 or n > MAX_BODY or (kind == TOMBSTONE and n) \
            or (kind == FOOTER and (stripe != NO_STRIPE or index)):
        return None
    return Record(kind, stripe, index, ns, offset, n)


def read_record(read_at: ReadAt, offset: int, size: int) -> tuple[Record | None, bool]:
    """(the head at `offset` or None, whether the record is complete: its head valid, its
    bytes within `size` and its trailer equal to the head's crc)."""
    raw = read_at(offset, HEAD_BYTES)
    rec = decode_head(raw, offset)
    if rec is None:
        return None, False
    if rec.end > size:
        return rec, False
    return rec, read_at(rec.end - TRAILER_BYTES, TRAILER_BYTES) == trailer_of(raw)


def find_next(read_at: ReadAt, start: int, size: int) -> int | None:
    """The offset of the first complete record at or after `start`, or None."""
    pos = start
    while pos + OVERHEAD <= size:
        chunk = read_at(pos, min(SEARCH_CHUNK + len(MAGIC) - 1, size - pos))
        at = chunk.find(MAGIC)
        while at >= 0:
            rec, whole = read_record(read_at, pos + at, size)
            if rec is not None and whole:
                return pos + at
            at = chunk.find(MAGIC, at + 1)
        pos += SEARCH_CHUNK
    return None


@dataclass
class Scan:
    """What a pack holds: its complete records in order, the damage found inside it, and
    where its good bytes end (`end` < the file's size: a torn tail from `end` on)."""

    records: list[Record] = field(default_factory=list)
    bad: list[Record] = field(default_factory=list)  # head valid, trailer not; skipped
    gaps: list[tuple[int, int]] = field(default_factory=list)  # no valid head in [a, b)
    end: int = 0


def scan(read_at: ReadAt, size: int, start: int = 0) -> Scan:
    """Walk a pack of `size` bytes from `start` (module doc for the rules)."""
    out = Scan()
    off = start
    while off < size:
        rec, whole = read_record(read_at, off, size)
        if rec is not None and whole:
            out.records.append(rec)
            off = rec.end
            continue
        # Trust a valid head's length (its bytes are skipped whole); without one, look on
        # from the next byte. Nothing complete after: the torn tail starts here.
        nxt = find_next(read_at, rec.end if rec is not None and rec.end <= size else off + 1,
                        size)
        if nxt is None:
            break
        if rec is not None and rec.end <= size:
            out.bad.append(rec)
            if nxt > rec.end:
                out.gaps.append((rec.end, nxt))
        else:
            out.gaps.append((off, nxt))
        off = nxt
    out.end = off
    return out


def encode_footer(records: list[Record], offset: int, time_ns: int) -> bytes:
    """The FOOTER record listing `records` (the pack's, in order), its head at `offset`."""
    raw = _CRC.pack(len(records)) + b"".join(
        _ENTRY.pack(r.kind, r.index, r.stripe, r.time_ns, r.offset, r.body_len)
        for r in records)
    body = raw + _CRC.pack(crc32c.crc32c(raw)) + _FOOT_END.pack(offset, FOOTER_MAGIC)
    head = encode_head(FOOTER, NO_STRIPE, 0, time_ns, len(body))
    return head + body + trailer_of(head)


def read_footer(read_at: ReadAt, size: int) -> list[Record] | None:
    """The records a pack's footer lists, or None when it has no footer that checks."""
    tail_bytes = _FOOT_END.size + TRAILER_BYTES
    if size < OVERHEAD + _FOOT_END.size + 2 * _CRC.size:  # a footer listing nothing
        return None
    end = read_at(size - tail_bytes, _FOOT_END.size)
    if len(end) != _FOOT_END.size:  # `size` past the pack's real end
        return None
    offset, magic = _FOOT_END.unpack(end)
    if magic != FOOTER_MAGIC or offset >= size:
        return None
    head, whole = read_record(read_at, offset, size)
    if head is None or not whole or head.kind != FOOTER or head.end != size:
        return None
    body = read_at(head.body_offset, head.body_len)
    raw = body[:-(_CRC.size + _FOOT_END.size)]
    if len(body) != head.body_len or len(raw) < _CRC.size \
            or body[len(raw):len(raw) + _CRC.size] != _CRC.pack(crc32c.crc32c(raw)):
        return None
    (count,) = _CRC.unpack_from(raw)
    if len(raw) != _CRC.size + count * _ENTRY.size:
        return None
    out: list[Record] = []
    at = 0
    for i in range(count):
        kind, index, stripe, ns, off, n = _ENTRY.unpack_from(raw, _CRC.size + i * _ENTRY.size)
        rec = Record(kind, stripe, index, ns, off, n)
        if kind not in (PUT, TOMBSTONE) or off != at or (kind == TOMBSTONE and n):
            return None  # the records must tile the pack up to the footer
        out.append(rec)
        at = rec.end
    return out if at == offset else None


def bytes_reader(data: bytes | bytearray | memoryview) -> ReadAt:
    """A `read_at` over bytes in memory (tests, and a pack read whole)."""
    view = memoryview(data)

    def read_at(offset: int, n: int) -> bytes:
        return bytes(view[offset:offset + n])
    return read_at
