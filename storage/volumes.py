"""Block volumes: thin-provisioned extent maps over the same encrypted, erasure-coded stripes.

A volume is a size, an extent size and an extent map. Each written extent is one stripe
written through `StripeStore` under a fresh data key wrapped by the tenant's KEK (identity =
tenant, volume, extent, generation, stripe), so a key is never reused. The map is versioned
by generation: a snapshot freezes generation g and bumps the volume to g+1; a write at the
current generation replaces a pointer of the same generation (its stripe is retired to the
GC queue) and adds a new pointer otherwise, keeping the old one while a snapshot needs it.
A clone is a volume whose base is (parent, snapshot generation). An attach lease with a
fencing token makes one writer at a time; every extent commit compares the lease and the
volume record revisions, so a fenced writer cannot commit and snapshots never race writes.

Key layout:
    VOL/<tenant>/<name>                       volume record (snapshots and clones inside)
    VX/<volume id>/<extent:010d>/<gen:010d>   extent pointer (stripe, nodes, key) or trim
    VL/<volume id>                            attach lease {holder, token, expires}
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from storage.config import Config
from storage.crypto import keys
from storage.crypto.aead import SegmentCipher
from storage.erasure import ErasureCodec
from storage.errors import Conflict, InvalidInput, NotFound, QuorumNotReached, StorageError
from storage.metadata import Item, MetadataStore, Txn, prefix_end
from storage.objects import stripe_index_key
from storage.pipeline import StripeCodec, segment_count
from storage.records import gc_key, pack, repair_key, unpack
from storage.shards.ids import new_stripe_id
from storage.stripes import StripeStore
from storage.tenants import TenantService

MiB = 1 << 20
MAX_VOLUME_BYTES = 1 << 60  # 1 EiB: sizes are stored as 64-bit integers
LEASE_TTL_S = 30.0
WRITE_ATTEMPTS = 3  # per extent write: a zone dying mid-write costs a retry, not an EIO
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
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
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)  # gen -> {name, created}
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

    def key(self) -> bytes:
        return extent_key(self.vid, self.index, self.gen)


def volume_key(tenant: str, name: str) -> bytes:
    return b"VOL/" + tenant.encode() + b"/" + name.encode()


def extent_prefix(vid: str, index: int | None = None) -> bytes:
    p = b"VX/" + vid.encode() + b"/"
    return p if index is None else p + f"{index:010d}/".encode()


def extent_key(vid: str, index: int, gen: int) -> bytes:
    return extent_prefix(vid, index) + f"{gen:010d}".encode()


def lease_key(vid: str) -> bytes:
    return b"VL/" + vid.encode()


def _identity(tenant: str, p: Pointer) -> str:
    return keys.pack_fields(b"", ["volume", tenant, p.vid, p.index, p.gen, p.stripe]).hex()


async def _scan(meta: MetadataStore, prefix: bytes) -> AsyncIterator[Item]:
    start, end = prefix, prefix_end(prefix)
    while True:
        items = await meta.range(start, end, limit=1000)
        for it in items:
            yield it
        if len(items) < 1000:
            return
        start = items[-1].key + b"\x00"


class VolumeService:
    """Create, list, snapshot, clone and delete volumes; `open` gives a handle for I/O."""

    def __init__(self, cfg: Config, meta: MetadataStore, tenants: TenantService,
                 stripes: StripeStore, gc_grace_s: float = 60.0) -> None:
        self.cfg = cfg
        self.meta = meta
        self.tenants = tenants
        self.stripes = stripes
        self.gc_grace_s = gc_grace_s

    # records -------------------------------------------------------------------------------

    async def _get(self, tenant: str, name: str) -> tuple[Volume, Item]:
        item = await self.meta.get(volume_key(tenant, name))
        if item is None:
            raise NotFound(f"volume {name!r} does not exist")
        return Volume.decode(item.value), item

    async def get(self, tenant: str, name: str) -> Volume:
        return (await self._get(tenant, name))[0]

    async def _update(self, tenant: str, name: str, change: Any) -> Volume:
        """Read-modify-CAS loop on a volume record; `change(vol)` mutates or raises."""
        while True:
            vol, item = await self._get(tenant, name)
            change(vol)
            if await self.meta.txn(Txn(compares={item.key: item.revision},
                                       puts={item.key: vol.encode()})):
                return vol

    async def create(self, tenant: str, name: str, size: int, extent_size: int = 1 * MiB,
                     profile: str | None = None) -> Volume:
        if not _NAME_RE.match(name):
            raise InvalidInput("volume names are 1-63 letters, digits, '.', '_' or '-'")
        if size <= 0 or size % 4096 or size > MAX_VOLUME_BYTES:
            raise InvalidInput("volume size must be a positive multiple of 4 KiB, at most 1 EiB")
        seg = self.cfg.segment_size
        if not (MiB <= extent_size <= 4 * MiB) or extent_size % seg:
            raise InvalidInput(f"extent size must be 1-4 MiB and a multiple of {seg} bytes")
        await self.tenants.kek(tenant)  # the tenant exists and has a live key
        prof = self.cfg.profile(profile)
        vol = Volume(id=secrets.token_hex(16), tenant=tenant, name=name, size=size,
                     extent_size=extent_size, created=time.time(), profile=prof.name)
        k = volume_key(tenant, name)
        if not await self.meta.txn(Txn(compares={k: 0}, puts={k: vol.encode()})):
            raise Conflict(f"volume {name!r} already exists")
        return vol

    async def list(self, tenant: str) -> list[Volume]:
        p = b"VOL/" + tenant.encode() + b"/"
        return [Volume.decode(i.value) async for i in _scan(self.meta, p)]

    async def resize(self, tenant: str, name: str, size: int) -> Volume:
        def grow(v: Volume) -> None:
            if size % 4096 or size < v.size or size > MAX_VOLUME_BYTES:
                raise InvalidInput(f"volumes only grow, in 4 KiB steps, up to 1 EiB (now "
                                   f"{v.size} bytes)")
            v.size = size
        return await self._update(tenant, name, grow)

    async def lease(self, vid: str) -> dict[str, Any] | None:
        item = await self.meta.get(lease_key(vid))
        return unpack(item.value) if item else None

    async def delete(self, tenant: str, name: str) -> None:
        vol, item = await self._get(tenant, name)
        if vol.clones:
            raise Conflict(f"volume {name!r} has clones ({', '.join(vol.clones)}): "
                           "flatten or delete them first")
        lease = await self.lease(vol.id)
        if lease and lease["expires"] > time.time():
            raise VolumeAttached(f"volume {name!r} is attached by {lease['holder']}")
        if not await self.meta.txn(Txn(compares={item.key: item.revision},
                                       deletes=(item.key, lease_key(vol.id)))):
            raise Conflict(f"volume {name!r} changed while being deleted; retry")
        await self._retire_all(vol.id)
        if vol.base:
            await self._unlink_clone(vol)

    async def _retire_all(self, vid: str) -> None:
        batch: list[Item] = []
        async for it in _scan(self.meta, extent_prefix(vid)):
            batch.append(it)
            if len(batch) >= 256:
                await self._retire_items(batch)
                batch = []
        if batch:
            await self._retire_items(batch)

    async def _retire_items(self, items: list[Item]) -> None:
        puts: dict[bytes, bytes] = {}
        deletes = [i.key for i in items]
        for it in items:
            p = _decode_pointer(it.value)
            if not p.trim and p.stripe:
                puts[gc_key(time.time_ns() + int(self.gc_grace_s * 1e9), p.stripe)] = pack(
                    {"nodes": p.nodes})
                deletes.append(stripe_index_key(p.stripe))
        await self.meta.txn(Txn(puts=puts, deletes=tuple(deletes)))

    async def _unlink_clone(self, vol: Volume) -> None:
        assert vol.base is not None
        me = f"{vol.tenant}/{vol.name}"

        def drop(p: Volume) -> None:
            if me in p.clones:
                p.clones.remove(me)
        try:
            await self._update(vol.base["tenant"], vol.base["name"], drop)
        except NotFound:
            pass

    # snapshots and clones -------------------------------------------------------------------

    async def snapshot(self, tenant: str, name: str, snap: str) -> int:
        """Freeze the committed extent map: returns the snapshot's generation."""
        if not _NAME_RE.match(snap):
            raise InvalidInput("snapshot names are 1-63 letters, digits, '.', '_' or '-'")
        frozen = 0

        def freeze(v: Volume) -> None:
            nonlocal frozen
            if any(s["name"] == snap for s in v.snapshots.values()):
                raise Conflict(f"volume {name!r} already has a snapshot {snap!r}")
            frozen = v.gen
            v.snapshots[v.gen] = {"name": snap, "created": time.time()}
            v.gen += 1
        await self._update(tenant, name, freeze)
        return frozen

    async def delete_snapshot(self, tenant: str, name: str, snap: str) -> None:
        cur = await self.get(tenant, name)
        g0 = cur.snapshot_gen(snap)
        others = set()  # clones made from other snapshots do not hold this one
        for c in cur.clones:
            ct, _, cn = c.partition("/")
            item = await self.meta.get(volume_key(ct, cn))
            base = Volume.decode(item.value).base if item is not None else None
            if base is not None and base.get("id") == cur.id and base.get("gen") != g0:
                others.add(c)

        def drop(v: Volume) -> None:
            g = v.snapshot_gen(snap)
            for c in v.clones:
                if g != g0 or c not in others:  # a clone linked meanwhile: stay safe
                    raise Conflict(f"snapshot {snap!r} has clone {c}: flatten or delete it first")
            del v.snapshots[g]
        vol = await self._update(tenant, name, drop)
        await self._collect(vol)

    async def _collect(self, vol: Volume) -> None:
        """Retire pointers no snapshot needs any more (never the newest of an extent)."""
        snaps = sorted(vol.snapshots)
        group: list[Item] = []
        dead: list[Item] = []

        def judge(items: list[Item]) -> None:
            gens = [_decode_pointer(i.value).gen for i in items]
            for n, it in enumerate(items[:-1]):
                lo, hi = gens[n], gens[n + 1]
                if not any(lo <= s < hi for s in snaps):
                    dead.append(it)
        async for it in _scan(self.meta, extent_prefix(vol.id)):
            if group and it.key.rsplit(b"/", 1)[0] != group[0].key.rsplit(b"/", 1)[0]:
                judge(group)
                group = []
            group.append(it)
        if group:
            judge(group)
        for i in range(0, len(dead), 256):
            await self._retire_items(dead[i:i + 256])

    async def clone(self, tenant: str, name: str, snap: str, new_name: str) -> Volume:
        parent = await self.get(tenant, name)
        g = parent.snapshot_gen(snap)
        await self.create(tenant, new_name, parent.size, parent.extent_size,
                          parent.profile)
        me = f"{tenant}/{new_name}"

        def link(v: Volume) -> None:
            v.snapshot_gen(snap)  # still there
            v.clones.append(me)

        def base(v: Volume) -> None:
            v.base = {"tenant": tenant, "name": name, "id": parent.id, "gen": g}
        try:
            await self._update(tenant, name, link)
        except BaseException:
            await self.meta.delete(volume_key(tenant, new_name))
            raise
        return await self._update(tenant, new_name, base)

    async def flatten(self, tenant: str, name: str,
                      progress: Any = None) -> Volume:
        """Copy every extent the clone still reads from its origin, then cut the link."""
        h = await self.open(tenant, name, holder=f"flatten:{secrets.token_hex(4)}")
        try:
            vol = h.vol
            if not vol.base:
                return vol
            for idx in range(vol.extents):
                if progress:
                    progress(idx, vol.extents)
                p = h.pointer(idx)
                if p is not None and p.vid != vol.id:
                    data = await h.read_extent(idx)
                    if data is not None:
                        await h.write_extent(idx, data)
            await self._unlink_clone(vol)

            def cut(v: Volume) -> None:
                v.base = None
            return await self._update(tenant, name, cut)
        finally:
            await h.close()

    # attach --------------------------------------------------------------------------------

    async def open(self, tenant: str, name: str, holder: str, lease_ttl_s: float = LEASE_TTL_S,
                   snapshot: str | None = None) -> VolumeHandle:
        """Attach for I/O (takes the lease), or open a snapshot read-only (no lease)."""
        vol = await self.get(tenant, name)
        h = VolumeHandle(self, vol, holder, lease_ttl_s)
        if snapshot is None:
            await h.acquire()
        else:
            h.read_only_gen = vol.snapshot_gen(snapshot)
        await h.load_map()
        return h

    async def stored_bytes(self, tenant: str, name: str) -> int:
        vol = await self.get(tenant, name)
        total = 0
        async for it in _scan(self.meta, extent_prefix(vol.id)):
            total += _decode_pointer(it.value).size
        return total


def _decode_pointer(raw: bytes) -> Pointer:
    d = unpack(raw)
    d.pop("fv", None)
    return Pointer(**d)


class VolumeHandle:
    """An attached volume: extent reads and atomic extent commits, fenced by the lease."""

    def __init__(self, svc: VolumeService, vol: Volume, holder: str, ttl: float) -> None:
        self.svc = svc
        self.vol = vol
        self.holder = holder
        self.ttl = ttl
        self.read_only_gen: int | None = None
        self.token = 0
        self._lease_rev = 0
        self._vol_rev = 0
        self._own: dict[int, Pointer] = {}  # newest own pointer per extent
        self._base: dict[int, Pointer] = {}  # origin pointers visible to a clone
        self._ciphers: dict[bytes, SegmentCipher] = {}
        self._renewer: asyncio.Task[None] | None = None
        self.fenced = False

    # lease ---------------------------------------------------------------------------------

    async def acquire(self) -> None:
        k = lease_key(self.vol.id)
        while True:
            item = await self.svc.meta.get(k)
            cur = unpack(item.value) if item else None
            now = time.time()
            if cur and cur["expires"] > now and cur["holder"] != self.holder:
                raise VolumeAttached(
                    f"volume {self.vol.name!r} is already attached by {cur['holder']} "
                    f"(lease expires in {cur['expires'] - now:.0f}s); unmount it there first")
            token = (cur["token"] if cur else 0) + 1
            rec = pack({"holder": self.holder, "token": token, "expires": now + self.ttl})
            if await self.svc.meta.txn(Txn(compares={k: item.revision if item else 0},
                                           puts={k: rec})):
                self.token = token
                self._lease_rev = (await self.svc.meta.get(k)).revision  # type: ignore[union-attr]
                break
        self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())

    async def renew(self) -> None:
        k = lease_key(self.vol.id)
        item = await self.svc.meta.get(k)
        cur = unpack(item.value) if item else None
        if item is None or cur is None or cur["token"] != self.token:
            self.fenced = True
            raise Fenced(f"volume {self.vol.name!r}: attach lease lost (fenced)")
        rec = pack({"holder": self.holder, "token": self.token,
                    "expires": time.time() + self.ttl})
        if not await self.svc.meta.txn(Txn(compares={k: item.revision}, puts={k: rec})):
            return await self.renew()
        self._lease_rev = (await self.svc.meta.get(k)).revision  # type: ignore[union-attr]

    async def _renew_loop(self) -> None:
        while not self.fenced:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.renew()
            except Fenced:
                return
            except StorageError:
                continue

    async def close(self) -> None:
        """Detach: stop renewing and drop the lease if it is still ours."""
        if self._renewer:
            self._renewer.cancel()
            self._renewer = None
            k = lease_key(self.vol.id)
            item = await self.svc.meta.get(k)
            if item and unpack(item.value)["token"] == self.token:
                await self.svc.meta.txn(Txn(compares={k: item.revision}, deletes=(k,)))

    # map -----------------------------------------------------------------------------------

    async def load_map(self) -> None:
        vol_item = await self.svc.meta.get(volume_key(self.vol.tenant, self.vol.name))
        if vol_item is None:
            raise NotFound(f"volume {self.vol.name!r} does not exist")
        self.vol = Volume.decode(vol_item.value)
        self._vol_rev = vol_item.revision
        self._own = await self._map_of(self.vol.id, self.read_only_gen)
        self._base = {}
        v = self.vol
        while v.base:  # a clone of a clone reads through the whole chain
            parent = await self.svc.get(v.base["tenant"], v.base["name"])
            for idx, p in (await self._map_of(parent.id, v.base["gen"])).items():
                self._base.setdefault(idx, p)
            v = parent

    async def _map_of(self, vid: str, upto: int | None) -> dict[int, Pointer]:
        out: dict[int, Pointer] = {}
        async for it in _scan(self.svc.meta, extent_prefix(vid)):
            p = _decode_pointer(it.value)
            if upto is None or p.gen <= upto:
                out[p.index] = p  # keys ascend by generation: the last one wins
        return out

    def pointer(self, idx: int) -> Pointer | None:
        p = self._own.get(idx)
        return p if p is not None else self._base.get(idx)

    def allocated(self) -> int:
        return sum(1 for i in range(self.vol.extents)
                   if (p := self.pointer(i)) is not None and not p.trim)

    # extent I/O ------------------------------------------------------------------------------

    async def _cipher(self, p: Pointer, tenant: str) -> SegmentCipher:
        c = self._ciphers.get(p.stripe)
        if c is None:
            _, kek = await self.svc.tenants.kek(tenant, p.kek_version)
            c = SegmentCipher(keys.unwrap_dek(kek, tenant, _identity(tenant, p), p.dek))
            if len(self._ciphers) > 4096:
                self._ciphers.clear()
            self._ciphers[p.stripe] = c
        return c

    def _codec(self, p: Pointer, cipher: SegmentCipher, tenant: str) -> StripeCodec:
        return StripeCodec(cipher=cipher, codec=ErasureCodec(p.k, p.m),
                           identity=_identity(tenant, p), part=p.index, stripe_id=p.stripe,
                           segment_size=p.segment_size)

    def extent_len(self, idx: int) -> int:
        return min(self.vol.extent_size, self.vol.size - idx * self.vol.extent_size)

    async def read_extent(self, idx: int) -> bytes | None:
        """The extent's bytes, or None if never written / trimmed (zeros).

        An allocated extent that cannot be rebuilt raises (DataUnavailable): never zeros.
        """
        p = self.pointer(idx)
        if p is None or p.trim:
            return None
        tenant = self.vol.tenant
        codec = self._codec(p, await self._cipher(p, tenant), tenant)
        out = bytearray()

        def damage(stripe: bytes, index: int, reason: str) -> None:
            asyncio.get_running_loop().create_task(self.svc.meta.put(
                repair_key(stripe), pack({"index": index, "reason": reason[:200],
                                          "volume": self.vol.id})))
        last = segment_count(p.size, p.segment_size) - 1
        async for chunk in self.svc.stripes.read(codec, p.nodes, p.size, 0, last, damage):
            out += chunk
        want = self.extent_len(idx)
        if len(out) < want:  # the volume grew past a short last extent
            out += bytes(want - len(out))
        return bytes(out[:want])

    async def write_extent(self, idx: int, data: bytes) -> None:
        """Store a whole extent as a new stripe and commit its pointer (fenced)."""
        if self.read_only_gen is not None:
            raise InvalidInput("snapshots are read-only")
        if len(data) != self.extent_len(idx):
            raise InvalidInput(f"extent {idx} must be {self.extent_len(idx)} bytes")
        tenant = self.vol.tenant
        prof = self.svc.cfg.profile(self.vol.profile)
        for attempt in range(WRITE_ATTEMPTS):
            # Each attempt is a new stripe under a new key: a nonce is never reused even if
            # an earlier attempt left partial shards behind (the orphan sweep takes those).
            kek_version, kek = await self.svc.tenants.kek(tenant)
            p = Pointer(vid=self.vol.id, index=idx, gen=self.vol.gen, stripe=new_stripe_id(),
                        size=len(data), k=prof.k, m=prof.m,
                        segment_size=self.svc.cfg.segment_size, kek_version=kek_version)
            dek = keys.new_dek()
            p.dek = keys.wrap_dek(kek, tenant, _identity(tenant, p), dek)
            codec = self._codec(p, SegmentCipher(dek), tenant)

            async def body() -> AsyncIterator[bytes]:
                yield data
            try:
                res = await self.svc.stripes.write(codec, prof, body(), size_hint=len(data))
                break
            except QuorumNotReached:
                # Nodes that just failed are now marked down, so the next placement avoids
                # them (a zone that dies mid-write costs one retry, not an I/O error).
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
        p.nodes = res.nodes
        try:
            await self._commit(p)
        except BaseException:
            await self.svc.meta.put(gc_key(time.time_ns(), p.stripe), pack({"nodes": p.nodes}))
            raise
        if None in res.nodes:
            await self.svc.meta.put(repair_key(p.stripe), pack({"volume": self.vol.id,
                                                                "reason": "write"}))
        self._ciphers[p.stripe] = SegmentCipher(dek)

    async def trim_extent(self, idx: int) -> None:
        """Punch a whole extent: it reads as zeros and (unless a snapshot holds it) frees."""
        if self.pointer(idx) is None:
            return
        await self._commit(Pointer(vid=self.vol.id, index=idx, gen=self.vol.gen, trim=True))

    async def _commit(self, p: Pointer) -> None:
        """Put the pointer, retiring what it replaces unless a snapshot still needs it."""
        while True:
            if self.fenced:
                raise Fenced(f"volume {self.vol.name!r}: attach lease lost (fenced)")
            p.gen = self.vol.gen
            prev = self._own.get(p.index)
            puts: dict[bytes, bytes] = {}
            deletes: list[bytes] = []
            keep_prev = prev is not None and prev.gen < p.gen and any(
                prev.gen <= s for s in self.vol.snapshots)
            hole = p.trim and not keep_prev and p.index not in self._base
            if prev is not None and not keep_prev:
                if prev.key() != p.key() or hole:
                    deletes.append(prev.key())
                if not prev.trim:
                    due = time.time_ns() + int(self.svc.gc_grace_s * 1e9)
                    puts[gc_key(due, prev.stripe)] = pack({"nodes": prev.nodes})
                    deletes.append(stripe_index_key(prev.stripe))
            if not hole:
                d = asdict(p)
                puts[p.key()] = pack(d)
                if not p.trim:  # indexed like object stripes, so repair and drain find it
                    puts[stripe_index_key(p.stripe)] = pack(
                        {"state": "live", "kind": "extent", "vx": p.key()})
            vk = volume_key(self.vol.tenant, self.vol.name)
            lk = lease_key(self.vol.id)
            ok = await self.svc.meta.txn(Txn(compares={vk: self._vol_rev, lk: self._lease_rev},
                                             puts=puts, deletes=tuple(deletes)))
            if ok:
                if hole:
                    self._own.pop(p.index, None)
                else:
                    self._own[p.index] = p
                return
            await self._resync()

    async def _resync(self) -> None:
        """A compare failed: re-read the lease (fenced?) and the volume record (snapshot?)."""
        item = await self.svc.meta.get(lease_key(self.vol.id))
        if item is None or unpack(item.value)["token"] != self.token:
            self.fenced = True
            raise Fenced(f"volume {self.vol.name!r}: attach lease was taken over (fenced)")
        self._lease_rev = item.revision
        vi = await self.svc.meta.get(volume_key(self.vol.tenant, self.vol.name))
        if vi is None:
            raise NotFound(f"volume {self.vol.name!r} was deleted")
        self.vol = Volume.decode(vi.value)
        self._vol_rev = vi.revision

    # byte I/O (no cache; the block driver adds one) -------------------------------------------

    async def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.vol.size:
            raise InvalidInput("read beyond the end of the volume")
        es = self.vol.extent_size
        out = bytearray()
        pos = offset
        while pos < offset + length:
            idx, off = divmod(pos, es)
            n = min(es - off, offset + length - pos)
            data = await self.read_extent(idx)
            out += bytes(n) if data is None else data[off:off + n]
            pos += n
        return bytes(out)

    async def write(self, offset: int, data: bytes) -> None:
        """Write bytes, read-modify-writing partial extents; durable when it returns."""
        if offset < 0 or offset + len(data) > self.vol.size:
            raise InvalidInput("write beyond the end of the volume")
        es = self.vol.extent_size
        pos = 0
        while pos < len(data):
            idx, off = divmod(offset + pos, es)
            n = min(self.extent_len(idx) - off, len(data) - pos)
            if off == 0 and n == self.extent_len(idx):
                buf = bytearray(data[pos:pos + n])
            else:
                cur = await self.read_extent(idx)
                buf = bytearray(cur if cur is not None else bytes(self.extent_len(idx)))
                buf[off:off + n] = data[pos:pos + n]
            await self.write_extent(idx, bytes(buf))
            pos += n

    async def trim(self, offset: int, length: int) -> None:
        """Punch a hole: whole extents are dropped, partial edges are zeroed."""
        es = self.vol.extent_size
        end = min(offset + length, self.vol.size)
        pos = offset
        while pos < end:
            idx, off = divmod(pos, es)
            n = min(self.extent_len(idx) - off, end - pos)
            if off == 0 and n == self.extent_len(idx):
                await self.trim_extent(idx)
            elif self.pointer(idx) is not None:
                await self.write(pos, bytes(n))
            pos += n
