"""Block volume records: the volume, its extent pointers, their metadata keys and size rules.

Keys (built by `storage.keyspace`; see storage/volumes.py for the model):
    (VOL, tenant, name)                       volume record (snapshots and clones inside)
    (VX, volume id, extent:010d, gen:010d)    extent pointer (stripe, nodes, key) or trim
    (VL, volume id)                           attach lease {holder, token, expires, proc,
                                              released}: kept after release (tokens grow)
    (VJ, volume id, seq:020d)                 journal segment (see storage/volume_journal.py)
    (VJK, volume id, seq:020d)                folded segment a snapshot holds (volume_held)
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from storage.crypto import keys
from storage.errors import Conflict, InvalidInput, NotFound, StorageError
from storage.keyspace import extent_key, next_key, span
from storage.leases import dead_local_process
from storage.metadata import Item, MetadataStore
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
    # gen -> {name, created, journal: [lo, hi] (the segments it replays, if any)}
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)
    base: dict[str, Any] | None = None  # {"tenant", "name", "id", "gen"} of a clone's origin
    clones: list[str] = field(default_factory=list)  # "tenant/name" of clones of our snapshots

    def encode(self) -> bytes:
        d = asdict(self)
        d["snapshots"] = {int(k): v for k, v in self.snapshots.items()}
        return pack(d)

    @classmethod
    def decode(cls, raw: bytes) -> Volume:
        d = unpack(raw)
        d.pop("fv", None)
        d["snapshots"] = {int(k): v for k, v in d.get("snapshots", {}).items()}
        return cls(**d)

    @property
    def extents(self) -> int:
        return -(-self.size // self.extent_size)

    def snapshot_gen(self, name: str) -> int:
        for g, s in self.snapshots.items():
            if s["name"] == name:
                return g
        raise NotFound(f"volume {self.name!r} has no snapshot {name!r}")

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


def lease_live(rec: dict[str, Any], now: float) -> bool:
    """An attach lease record still binds: not released, not expired, and its holder is not
    a process known to be gone from this host."""
    return (not rec.get("released") and float(rec.get("expires", 0)) > now
            and not dead_local_process(rec.get("proc")))


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
