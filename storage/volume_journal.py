"""A block volume's write-ahead journal: small writes as sealed, erasure-coded segments.

A journal segment is a batch of writes (byte offset + bytes), stored as one stripe through
the same pipeline as extents, under a fresh data key wrapped by the tenant's KEK (identity =
tenant, volume, "journal", sequence number, stripe), and committed as a record
`(VJ, volume id, seq:020)` in a transaction that compares the attach lease, so a fenced
writer's appends are refused. Sequence numbers grow per volume; an extent pointer's `jseq`
says which journal sequence it already folds in, so replay applies a segment to an extent
only when the segment is newer. `recover` (run on every attach) replays what a crashed
writer left, in sequence order, folds it into extents and retires the segments.

Segment plaintext (format version 1, little-endian):
    magic b"TVJ1" | count u32 | count x (offset u64 | length u32 | bytes)
"""

from __future__ import annotations

import asyncio
import functools
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field

from storage.crypto import keys
from storage.crypto.aead import SegmentCipher
from storage.erasure import ErasureCodec
from storage.errors import InvalidInput, NotFound, QuorumNotReached
from storage.keyspace import (
    gc_key,
    journal_head_key,
    journal_key,
    journal_prefix,
    repair_key,
    stripe_index_key,
)
from storage.pipeline import StripeCodec, segment_count
from storage.records import pack, unpack
from storage.shards.ids import new_stripe_id
from storage.volume_io import VolumeHandle
from storage.volume_records import WRITE_ATTEMPTS, Fenced, scan_prefix

MAGIC = b"TVJ1"
RECOVER_PARALLEL = 8  # extents folded at once when replaying a crashed writer's journal
_HEAD = struct.Struct("<4sI")
_ENTRY = struct.Struct("<QI")
Entry = tuple[int, bytes]  # (volume byte offset, bytes)


def encode_entries(entries: list[Entry]) -> bytes:
    """A segment's plaintext: the header, then each entry's offset, length and bytes
    (one join: each byte is copied once, with no growing buffer)."""
    pack = _ENTRY.pack
    parts = [_HEAD.pack(MAGIC, len(entries))]
    for off, data in entries:
        parts.append(pack(off, len(data)))
        parts.append(data)
    return b"".join(parts)


@functools.lru_cache(maxsize=4)
def _zeros(n: int) -> bytes:
    return bytes(n)


def is_zero(data: bytes) -> bool:
    """True when every byte is zero: a compare with a kept zero buffer stops at the first
    non-zero byte (`bytes.count` scans the whole megabyte)."""
    return not data or (data[0] == 0 and data == _zeros(len(data)))


def decode_entries(raw: bytes) -> list[Entry]:
    """Parse a segment's plaintext; anything malformed is an error, never a partial list."""
    if len(raw) < _HEAD.size:
        raise InvalidInput("journal segment too short")
    magic, count = _HEAD.unpack_from(raw, 0)
    if magic != MAGIC:
        raise InvalidInput(f"not a journal segment (magic {magic!r})")
    pos, out = _HEAD.size, []
    for _ in range(count):
        if pos + _ENTRY.size > len(raw):
            raise InvalidInput("journal segment truncated")
        off, n = _ENTRY.unpack_from(raw, pos)
        pos += _ENTRY.size
        if pos + n > len(raw):
            raise InvalidInput("journal segment truncated")
        out.append((off, raw[pos:pos + n]))
        pos += n
    if pos != len(raw):
        raise InvalidInput("journal segment has trailing bytes")
    return out


@dataclass
class Segment:
    """The record of one journal segment. `index`, `size`, `stripe`, `k`, `m`,
    `segment_size` and `nodes` are laid out as an extent pointer's, so repair, scrub and
    drain treat the stripe like an extent's (stripe index kind "extent")."""

    vid: str
    seq: int
    stripe: bytes = b""
    nodes: list[str | None] = field(default_factory=list)
    size: int = 0
    k: int = 0
    m: int = 0
    segment_size: int = 0
    kek_version: int = 0
    dek: bytes = b""
    extents: list[int] = field(default_factory=list)  # extents the entries touch
    index: int = 0

    def key(self) -> bytes:
        return journal_key(self.vid, self.seq)


def _identity(tenant: str, s: Segment) -> str:
    return keys.pack_fields(b"", ["volume-journal", tenant, s.vid, s.seq, s.stripe]).hex()


def _codec(s: Segment, cipher: SegmentCipher, tenant: str) -> StripeCodec:
    return StripeCodec(cipher=cipher, codec=ErasureCodec(s.k, s.m), identity=_identity(tenant, s),
                       part=0, stripe_id=s.stripe, segment_size=s.segment_size)


async def append(h: VolumeHandle, seq: int, entries: list[Entry],
                 extents: list[int] | None = None) -> Segment:
    """Store entries as segment `seq` at write quorum and commit its record (fenced).
    `extents`, when the caller knows them, are the sorted extents the entries touch.

    Returns once both hold: then the writes are durable. A fenced writer's record is
    refused (Fenced) and its stripe goes to the GC queue.
    """
    tenant, vid = h.vol.tenant, h.vol.id
    es = h.vol.extent_size
    body = encode_entries(entries)
    prof = h.svc.cfg.profile(h.vol.profile)
    touched = extents if extents is not None else sorted(
        {off // es for off, data in entries} | {
            (off + len(data) - 1) // es for off, data in entries if data})
    for attempt in range(WRITE_ATTEMPTS):
        kek_version, kek = await h.svc.tenants.kek(tenant)
        s = Segment(vid=vid, seq=seq, stripe=new_stripe_id(), size=len(body), k=prof.k,
                    m=prof.m, segment_size=h.svc.cfg.segment_size, kek_version=kek_version,
                    extents=touched)
        dek = keys.new_dek()
        s.dek = keys.wrap_dek(kek, tenant, _identity(tenant, s), dek)

        async def source() -> AsyncIterator[bytes]:
            yield body
        try:
            res = await h.svc.stripes.write(_codec(s, SegmentCipher(dek), tenant), prof,
                                            source(), size_hint=len(body))
            break
        except QuorumNotReached:
            if attempt == WRITE_ATTEMPTS - 1:
                raise
    s.nodes = res.nodes
    puts = {s.key(): pack(asdict(s)), journal_head_key(vid): pack({"seq": seq}),
            stripe_index_key(s.stripe): pack({"state": "live", "kind": "extent", "vx": s.key()})}
    try:
        await h.fenced_txn(puts)
    except (Fenced, NotFound):
        await h.svc.meta.put(gc_key(time.time_ns(), s.stripe), pack({"nodes": s.nodes}))
        raise
    if None in res.nodes:
        await h.svc.meta.put(repair_key(s.stripe), pack({"volume": vid, "reason": "write"}))
    return s


async def segments(h: VolumeHandle) -> list[Segment]:
    """Every journal segment record of the volume, in sequence order."""
    out = []
    async for it in scan_prefix(h.svc.meta, journal_prefix(h.vol.id)):
        d = unpack(it.value)
        d.pop("fv", None)
        out.append(Segment(**d))
    return out


async def read_entries(h: VolumeHandle, s: Segment) -> list[Entry]:
    """A segment's entries; a segment that cannot be rebuilt raises (never zeros)."""
    tenant = h.vol.tenant
    _, kek = await h.svc.tenants.kek(tenant, s.kek_version)
    cipher = SegmentCipher(keys.unwrap_dek(kek, tenant, _identity(tenant, s), s.dek))
    out = bytearray()
    last = segment_count(s.size, s.segment_size) - 1
    async for chunk in h.svc.stripes.read(_codec(s, cipher, tenant), s.nodes, s.size, 0, last):
        out += chunk
    return decode_entries(bytes(out[:s.size]))


async def retire(h: VolumeHandle, segs: list[Segment]) -> None:
    """Drop folded segments: records and stripe index entries go, stripes to the GC queue."""
    for i in range(0, len(segs), 100):
        batch = segs[i:i + 100]
        due = time.time_ns() + int(h.svc.gc_grace_s * 1e9)
        puts = {gc_key(due, s.stripe): pack({"nodes": s.nodes}) for s in batch}
        deletes = tuple(k for s in batch for k in (s.key(), stripe_index_key(s.stripe)))
        await h.fenced_txn(puts, deletes)


def apply(base: bytes | None, size: int, writes: list[tuple[int, bytes]]) -> bytes:
    """An extent's bytes after `writes` (offset within the extent, bytes), in order."""
    buf = bytearray(base if base is not None else bytes(size))
    for off, data in writes:
        buf[off:off + len(data)] = data[:max(0, size - off)]
    return bytes(buf)


async def recover(h: VolumeHandle) -> int:
    """Replay the segments a crashed writer left and fold them into extents.

    Segments are applied in sequence order, each to the extents it touches whose pointer
    folds in an older sequence (newer journal entries win over the extent). Returns the
    largest sequence number in use, so the next segment is numbered above it.
    """
    segs = await segments(h)
    floor = max([h.journal_floor()] + [s.seq for s in segs])
    if not segs:
        return floor
    es = h.vol.extent_size
    pending: dict[int, list[tuple[int, bytes]]] = {}
    for s in segs:
        for off, data in await read_entries(h, s):
            pos = 0
            while pos < len(data):
                idx, eo = divmod(off + pos, es)
                n = min(es - eo, len(data) - pos)
                if idx < h.vol.extents and s.seq > h.jseq_of(idx):
                    pending.setdefault(idx, []).append((eo, data[pos:pos + n]))
                pos += n
    sem = asyncio.Semaphore(RECOVER_PARALLEL)

    async def fold(idx: int, writes: list[tuple[int, bytes]]) -> None:
        async with sem:
            data = apply(await h.read_extent(idx), h.extent_len(idx), writes)
            if is_zero(data):
                await h.trim_extent(idx, jseq=floor)
            else:
                await h.write_extent(idx, data, jseq=floor)
    await asyncio.gather(*(fold(i, w) for i, w in sorted(pending.items())))
    await retire(h, segs)
    return floor
