"""A block volume's write-ahead journal: small writes as sealed, erasure-coded segments.

A journal segment is a batch of writes (byte offset + bytes), stored as one stripe through
the same pipeline as extents, under a fresh data key wrapped by the tenant's KEK (identity =
tenant, volume, "journal", sequence number, stripe), and committed as a record
`(VJ, volume id, seq:020)` in a transaction that compares the attach lease, so a fenced
writer's appends are refused. Sequence numbers grow per volume; an extent pointer's `jseq`
says which journal sequence it already folds in, so replay applies a segment to an extent
only when the segment is newer. `recover` (run on every attach) replays what a crashed
writer left, in sequence order, folds it into extents and retires the segments. A retired
segment that a snapshot replays is kept (storage/volume_held.py).

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
from typing import TYPE_CHECKING

from storage import commit_nodes
from storage.crypto import keys
from storage.crypto.aead import SegmentCipher
from storage.erasure import ErasureCodec
from storage.errors import InvalidInput, NodeRemoved, NotFound, QuorumNotReached
from storage.keyspace import (
    discarded_key,
    gc_key,
    journal_head_key,
    journal_key,
    journal_prefix,
    kept_journal_key,
    kept_journal_prefix,
    stripe_index_key,
)
from storage.metadata import MetadataStore
from storage.pipeline import StripeCodec, segment_count
from storage.records import pack, unpack
from storage.shards.ids import new_stripe_id
from storage.volume_io import Built, VolumeHandle
from storage.volume_records import WRITE_ATTEMPTS, Fenced, scan_prefix

if TYPE_CHECKING:
    from storage.volumes import VolumeService

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
    refused (Fenced) and its stripe goes to the GC queue. A stripe placed on a node removed
    from the cluster map before the commit (`commit_nodes`) goes there too, and the entries
    are written again on the map as it is now: a flush is not failed for a removal.
    """
    es = h.vol.extent_size
    body = encode_entries(entries)
    touched = extents if extents is not None else sorted(
        {off // es for off, data in entries} | {
            (off + len(data) - 1) // es for off, data in entries if data})
    for attempt in range(WRITE_ATTEMPTS):
        s = await _store(h, seq, body, touched)
        try:
            await _commit(h, s)
        except NodeRemoved:
            await h.svc.meta.put(gc_key(time.time_ns(), s.stripe), pack({"nodes": s.nodes}))
            if attempt == WRITE_ATTEMPTS - 1:
                raise
            continue
        return s
    raise AssertionError("unreachable")


async def _store(h: VolumeHandle, seq: int, body: bytes, touched: list[int]) -> Segment:
    """Write `body` as a fresh stripe at write quorum (placed anew on each attempt)."""
    tenant, vid = h.vol.tenant, h.vol.id
    prof = h.svc.cfg.profile(h.vol.profile)
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
    return s


async def _commit(h: VolumeHandle, s: Segment) -> None:
    """Commit segment `s`'s record (fenced), its stripe indexed and, when short, queued."""
    vid = h.vol.id
    puts = {s.key(): pack(asdict(s)), journal_head_key(vid): pack({"seq": s.seq}),
            stripe_index_key(s.stripe): pack({"state": "live", "kind": "extent", "vx": s.key()})}
    last: dict[bytes, int] = {}

    async def build() -> Built:
        # the fresh stripe's discard tombstone compared absent, as object commits do, and
        # the membership epoch (`commit_nodes`: NodeRemoved for a named node removed)
        nonlocal last
        if last:
            await h.refuse_discarded(s.stripe)
            await commit_nodes.recheck(h.svc.meta, h.svc.cfg, h.svc.stripes.health, last)
        last = {discarded_key(s.stripe): 0}
        commit_nodes.guard(h.svc.stripes.health, s.nodes, last)
        return puts, (), dict(last)
    try:
        await h.fenced_build(build)
    except (Fenced, NotFound):
        await h.svc.meta.put(gc_key(time.time_ns(), s.stripe), pack({"nodes": s.nodes}))
        raise
    queue = h.svc.stripes.spares.repair_entry(s.stripe, s.nodes, s.m)
    if queue is not None:  # short (urgent) or a zone over m (a spill): as objects queue
        await h.svc.meta.put(queue, pack({"volume": vid, "reason": "write"}))


async def segments(h: VolumeHandle) -> list[Segment]:
    """Every journal segment record of the volume, in sequence order."""
    return [s async for s in scan_segments(h.svc.meta, journal_prefix(h.vol.id))]


async def scan_segments(meta: MetadataStore, prefix: bytes) -> AsyncIterator[Segment]:
    """The segment records under `prefix` (live or kept), in sequence order."""
    async for it in scan_prefix(meta, prefix):
        d = unpack(it.value)
        d.pop("fv", None)
        yield Segment(**d)


async def read_entries(svc: VolumeService, tenant: str, s: Segment) -> list[Entry]:
    """A segment's entries; a segment that cannot be rebuilt raises (never zeros)."""
    _, kek = await svc.tenants.kek(tenant, s.kek_version)
    cipher = SegmentCipher(keys.unwrap_dek(kek, tenant, _identity(tenant, s), s.dek))
    out = bytearray()
    last = segment_count(s.size, s.segment_size) - 1
    async for chunk in svc.stripes.read(_codec(s, cipher, tenant), s.nodes, s.size, 0, last):
        out += chunk
    return decode_entries(bytes(out[:s.size]))


async def retire(h: VolumeHandle, segs: list[Segment]) -> None:
    """Drop folded segments: records and stripe index entries go, stripes to the GC queue;
    a segment a snapshot replays is kept instead (its record moves to `kept_journal_key`,
    its stripe index entry follows it), decided on the volume record the commit compares."""
    for i in range(0, len(segs), 100):
        batch = segs[i:i + 100]

        async def build(batch: list[Segment] = batch) -> Built:
            # The records as they are now: repair or a drain may have moved a shard since
            # the append (a kept record must name where the shards are, and GC the same).
            due = time.time_ns() + int(h.svc.gc_grace_s * 1e9)
            puts: dict[bytes, bytes] = {}
            deletes: list[bytes] = []
            compares: dict[bytes, int] = {}
            for s in batch:
                it = await h.svc.meta.get(s.key())
                compares[s.key()] = it.revision if it is not None else 0
                if it is None:
                    continue
                deletes.append(s.key())
                if h.vol.holds_segment(s.seq):
                    kept = kept_journal_key(s.vid, s.seq)
                    puts[kept] = it.value
                    puts[stripe_index_key(s.stripe)] = pack(
                        {"state": "live", "kind": "extent", "vx": kept})
                else:
                    puts[gc_key(due, s.stripe)] = pack({"nodes": unpack(it.value)["nodes"]})
                    deletes.append(stripe_index_key(s.stripe))
            return puts, tuple(deletes), compares
        await h.fenced_build(build)


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
    kept = [s.seq async for s in scan_segments(h.svc.meta, kept_journal_prefix(h.vol.id))]
    floor = max([h.journal_floor()] + [s.seq for s in segs] + kept)  # never a seq reused
    if not segs:
        return floor
    es = h.vol.extent_size
    pending: dict[int, list[tuple[int, bytes]]] = {}
    for s in segs:
        for off, data in await read_entries(h.svc, h.vol.tenant, s):
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
