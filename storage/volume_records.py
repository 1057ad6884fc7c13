"""Block volume records: the volume, its extent pointers, their metadata keys and size rules.

Keys (built by `storage.keyspace`; see storage/volumes.py for the model):
    (VOL, tenant, name)                       volume record (snapshots and clones inside)
    (VX, volume id, extent:010d, gen:010d)    extent pointer (stripe, nodes, key) or trim
    (VL, volume id)                           attach lease {holder, token, expires, ttl,
                                              proc, released}: kept after release (tokens grow)
    (VJ, volume id, seq:020d)                 journal segment (see storage/volume_journal.py)
    (VJK, volume id, seq:020d)                folded segment a snapshot holds (volume_held)
    (VD, volume id)                           a deleted volume's record while its pointers
                                              are retired (storage/volume_gone.py; owner:
                                              VolumeService.delete)
    (VC, volume id, token)                    a snapshot delete's collect marker, one per
                                              delete (owner: VolumeService.delete_snapshot)
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from storage import leaseclock
from storage.crypto import keys
from storage.errors import Conflict, InvalidInput, NotFound, StorageError
from storage.keyspace import extent_key, next_key, span, volume_key
from storage.leases import dead_local_process
from storage.metadata import Item, MetadataStore, Txn
from storage.records import pack, unpack

MiB = 1 << 20
MAX_VOLUME_BYTES = 1 << 60  # 1 EiB: sizes are stored as 64-bit integers
LEASE_TTL_S = 30.0
WRITE_ATTEMPTS = 3  # per extent write: a zone dying mid-write costs a retry, not an EIO
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_SIZE_RE = re.compile(r"^(\d+)([KMGTP]?)(i?B)?\Z", re.IGNORECASE)


class Fenced(StorageError):
    """This writer's attach lease was taken over: it may no longer commit."""


class VolumeAttached(Conflict):
    """The volume is attached by another writer whose lease has not expired."""


def parse_size(text: str) -> int:
    """'10G', '512M', '1GiB', '4096' -> bytes (binary units)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise InvalidInput(f"cannot parse size {text!r} (use e.g. 10G, 512M)")
    return int(m.group(1)) << (10 * " KMGTP".index(m.group(2).upper() or " "))


# The volume record's format (`fv`; absent or 1: before it was checked). 2: a snapshot entry
# may carry `journal` (a held range, storage/volume_held.py) and `base` (its origin kept by a
# flatten); code reading 1 ignores both and misreads such snapshots (extents only) with no
# error, so there is no downgrade below 2 (ARCHITECTURE, metadata keys). A newer one is refused.
VOLUME_FORMAT_VERSION = 2


@dataclass
class Volume:
    id: str
    tenant: str
    name: str
    size: int
    extent_size: int
    created: float
    profile: str
    gen: int = 1
    # gen -> {name, created, journal: [lo, hi] (the segments it replays, if any), base: the
    # origin it reads through when the volume was flattened after it (`base_at`)}
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)
    base: dict[str, Any] | None = None  # {"tenant", "name", "id", "gen"} of a clone's origin
    clones: list[str] = field(default_factory=list)  # "tenant/name" of clones of our snapshots

    def encode(self) -> bytes:
        d = asdict(self)
        d["snapshots"] = {int(k): v for k, v in self.snapshots.items()}
        d["fv"] = VOLUME_FORMAT_VERSION
        return pack(d)

    @classmethod
    def decode(cls, raw: bytes) -> Volume:
        d = unpack(raw)
        fv = int(d.pop("fv", 1))
        if fv > VOLUME_FORMAT_VERSION:
            raise StorageError(
                f"volume {d.get('name')!r} has record format {fv}, newer than this code reads "
                f"({VOLUME_FORMAT_VERSION}): its snapshots would be misread; upgrade Tessera")
        d["snapshots"] = {int(k): v for k, v in d.get("snapshots", {}).items()}
        return cls(**d)

    @property
    def extents(self) -> int:
        return -(-self.size // self.extent_size)

    def extent_len(self, idx: int) -> int:
        """Extent idx's length at the volume's size now (the last one may be short)."""
        return min(self.extent_size, self.size - idx * self.extent_size)

    def fit(self, idx: int, data: bytes) -> bytes:
        """Extent idx's bytes at its length now: a short last extent the volume outgrew
        (resized while attached) reads zeros past its old end, as a stored one does. Every
        buffer an extent is built in starts from this: a page put past the end of a shorter
        bytearray is appended at that end instead (a write moved, the place it was written
        left zeros)."""
        want = self.extent_len(idx)
        if len(data) > want:
            raise InvalidInput(f"extent {idx} holds at most {want} bytes")
        return data + bytes(want - len(data)) if len(data) < want else data

    def snapshot_gen(self, name: str) -> int:
        for g, s in self.snapshots.items():
            if s["name"] == name:
                return g
        raise NotFound(f"volume {self.name!r} has no snapshot {name!r}")

    def base_at(self, gen: int | None) -> dict[str, Any] | None:
        """The origin snapshot generation `gen` reads through (None: the live volume). A
        flatten cuts the volume's own link but keeps it for the snapshots taken before."""
        snap = self.snapshots.get(gen) if gen is not None else None
        return snap["base"] if snap is not None and "base" in snap else self.base

    def origins(self) -> list[dict[str, Any]]:
        """Every origin snapshot this volume or one of its snapshots reads through: each
        holds the origin's snapshot (it cannot be deleted while it is listed here)."""
        out: list[dict[str, Any]] = []
        for b in [self.base, *(s.get("base") for s in self.snapshots.values())]:
            if b is not None and b not in out:
                out.append(b)
        return out

    def held_journal(self, gen: int) -> tuple[int, int] | None:
        """The journal sequences [lo, hi] snapshot `gen` replays over its extents (None:
        its extents hold it all, as every snapshot taken before this existed)."""
        rng = self.snapshots[gen].get("journal")
        return (int(rng[0]), int(rng[1])) if rng else None

    def holds_segment(self, seq: int) -> bool:
        """Whether a snapshot replays journal segment `seq`: its writer may fold it, but the
        segment stays (kept, storage/volume_held.py) until no such snapshot is left."""
        return any(lo <= seq <= hi for g in self.snapshots
                   if (r := self.held_journal(g)) is not None for lo, hi in [r])


@dataclass
class Pointer:
    """Where one extent generation lives; `trim` marks a punched hole (reads as zeros)."""

    vid: str
    index: int
    gen: int
    stripe: bytes = b""
    nodes: list[str | None] = field(default_factory=list)
    size: int = 0
    k: int = 0
    m: int = 0
    segment_size: int = 0
    kek_version: int = 0
    dek: bytes = b""
    trim: bool = False
    seal_gen: int = 0  # generation in the key's identity when it differs from `gen`; 0: same
    jseq: int = 0  # journal sequence folded in: replay skips older journal entries for it

    def key(self) -> bytes:
        return extent_key(self.vid, self.index, self.gen)



def check_snapshot_name(snap: str) -> None:
    """Refuse a snapshot name the volume record cannot hold (InvalidInput)."""
    if not NAME_RE.match(snap):
        raise InvalidInput("snapshot names are 1-63 letters, digits, '.', '_' or '-'")


def lease_at_a_glance(item: Item | None, ttl_s: float = LEASE_TTL_S) -> bool | None:
    """What `lease_holds` can tell from one read without watching: False (none, released,
    holder gone from this host), True (live by both clocks), or None (only watching the
    record for its ttl can tell: the clocks disagree or the holder died elsewhere)."""
    if item is None:
        return False
    rec = unpack(item.value)
    if rec.get("released") or dead_local_process(rec.get("proc")):
        return False
    ttl = float(rec.get("ttl") or ttl_s)
    left = float(rec.get("expires", 0)) - time.time()
    if 0 < left <= ttl + 1.0:
        return True
    return None


# Told what a `lease_holds` watch waits for: the lease record as read, and the seconds left
# of the watch (at its start, then after each look).
Watching = Callable[[Item, float], None]


async def lease_holds(meta: MetadataStore, item: Item | None, ttl_s: float = LEASE_TTL_S,
                      watching: Watching | None = None) -> bool:
    """Whether the attach lease record `item` (as just read) still binds its holder, decided
    without trusting the holder's clock against this one's.

    Released, or held by a process gone from this host: no. Live by this clock and expiring
    within its ttl of now (both clocks agree to a ttl): yes, at once. Otherwise (expired by
    this clock, or said to run longer than a renewal gives: the clocks disagree, or the
    holder died) the record is watched on this process's boot clock (`leaseclock.now`, which
    counts a suspend, as the holder's does) for its ttl (the record's own, else `ttl_s`): a
    holder that renews it (every third of the ttl) holds it; one that leaves it unchanged
    that long does not. Before, a host whose clock ran a ttl ahead took a live writer's
    volume at once (its fsyncs failed EIO) and a delete through it removed an attached
    volume; a holder whose clock ran ahead kept others out long after it died. The caller
    compares `item`'s revision when it writes, so a renewal after the last look fails its
    transaction. `watching` is told when a watch starts and how long it has left after each
    look (a command says what it waits for, not a silent ttl)."""
    first = lease_at_a_glance(item, ttl_s)
    if first is not None:
        return first
    assert item is not None
    ttl = float(unpack(item.value).get("ttl") or ttl_s)
    deadline = leaseclock.now() + ttl
    while (wait := deadline - leaseclock.now()) > 0:
        if watching is not None:
            watching(item, wait)
        await asyncio.sleep(min(wait, ttl / 6))  # a renewal comes every ttl / 3
        now = await meta.get(item.key)
        if now is None or now.revision != item.revision:
            # renewed or taken meanwhile: held, unless released (gone: deleted with it)
            return now is not None and not unpack(now.value).get("released")
    return False


def extent_identity(tenant: str, p: Pointer) -> str:
    """What an extent's key and segments are bound to: the generation it was sealed at
    (`seal_gen`), which a snapshot committed meanwhile may leave below the pointer's own."""
    gen = p.seal_gen or p.gen
    return keys.pack_fields(b"", ["volume", tenant, p.vid, p.index, gen, p.stripe]).hex()


async def scan_prefix(meta: MetadataStore, prefix: bytes) -> AsyncIterator[Item]:
    start, end = span(prefix)
    while True:
        items = await meta.range(start, end, limit=1000)
        for it in items:
            yield it
        if len(items) < 1000:
            return
        start = next_key(items[-1].key)


def decode_pointer(raw: bytes) -> Pointer:
    d = unpack(raw)
    d.pop("fv", None)
    return Pointer(**d)


async def unlink_clone(meta: MetadataStore, vol: Volume, base: dict[str, Any]) -> None:
    """Drop `vol` from the clones of origin `base` (it no longer reads through it), unless
    the volume now of its name reads through that origin (one made since under the same
    name, from any of its snapshots: the origin lists clones by name, once). The name's
    record is compared with the origin's, so a clone made meanwhile is seen."""
    me = f"{vol.tenant}/{vol.name}"
    name_key = volume_key(vol.tenant, vol.name)
    while True:
        now = await meta.get(name_key)
        if now is not None and any(o.get("id") == base.get("id")
                                   for o in Volume.decode(now.value).origins()):
            return
        item = await meta.get(volume_key(base["tenant"], base["name"]))
        if item is None:
            return
        origin = Volume.decode(item.value)
        if origin.id != base.get("id", origin.id) or me not in origin.clones:
            return
        origin.clones.remove(me)
        if await meta.txn(Txn(compares={item.key: item.revision,
                                        name_key: now.revision if now else 0},
                              puts={item.key: origin.encode()})):
            return
