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
    (VOL, tenant, name)                       volume record (snapshots and clones inside)
    (VX, volume id, extent:010d, gen:010d)    extent pointer (stripe, nodes, key) or trim
    (VL, volume id)                           attach lease {holder, token, expires}
    (VJ, volume id, seq:020d)                 journal segment (storage/volume_journal.py)
    (VJK, volume id, seq:020d)                folded segment a snapshot holds (volume_held)
    (VD, volume id)                           a deleted volume while its pointers are retired
    (VC, volume id, token)                    a snapshot delete's collect marker
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection
from typing import Any

from storage import volume_held as held
from storage.config import Config
from storage.errors import Conflict, InvalidInput, NotFound
from storage.keyspace import (
    extent_prefix,
    journal_head_key,
    journal_prefix,
    span,
    volume_collect_key,
    volume_gone_key,
    volume_key,
    volume_lease_key,
    volume_prefix,
)
from storage.keyspace import unpack as unpack_key
from storage.leases import local_process
from storage.metadata import Item, MetadataStore, Txn
from storage.records import pack, unpack
from storage.stripes import StripeStore
from storage.tenant_state import tenant_compare
from storage.tenants import TenantService
from storage.volume_gone import gone_volume_step, retire
from storage.volume_io import VolumeHandle
from storage.volume_journal import recover
from storage.volume_records import (
    LEASE_TTL_S,
    MAX_VOLUME_BYTES,
    NAME_RE,
    Fenced,
    MiB,
    Pointer,
    Volume,
    VolumeAttached,
    Watching,
    check_snapshot_name,
    decode_pointer,
    lease_at_a_glance,
    lease_holds,
    parse_size,
    scan_prefix,
)

__all__ = ["LEASE_TTL_S", "Fenced", "MiB", "Pointer", "Volume", "VolumeAttached",
           "VolumeHandle", "VolumeService", "decode_pointer", "extent_prefix", "parse_size"]

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
            # the tenant named: `tessera volume` defaults to one, a volume may be another's
            raise NotFound(f"volume {name!r} does not exist in tenant {tenant!r}; see "
                           "`tessera volume list [--tenant T]`")
        return Volume.decode(item.value), item

    async def get(self, tenant: str, name: str) -> Volume:
        return (await self._get(tenant, name))[0]

    async def _update(self, tenant: str, name: str, change: Any,
                      also: dict[bytes, bytes] | None = None) -> Volume:
        """Read-modify-CAS loop on a volume record; `change(vol)` mutates or raises.

        An origin the change leaves the volume no longer reading through (a flatten's cut,
        the last snapshot kept from before it deleted) drops the volume from its clones in
        the same transaction: a process killed after the change must not leave the origin
        listing it for good (then neither the origin nor its snapshot could be deleted).
        `also`: further records put in that transaction."""
        me = f"{tenant}/{name}"
        while True:
            vol, item = await self._get(tenant, name)
            before = vol.origins()
            change(vol)
            compares = {item.key: item.revision}
            puts = {item.key: vol.encode(), **(also or {})}
            for b in before:
                if b in vol.origins():
                    continue
                origin = await self.meta.get(volume_key(b["tenant"], b["name"]))
                if origin is None:
                    continue
                o = Volume.decode(origin.value)
                if o.id == b.get("id") and me in o.clones:
                    o.clones.remove(me)
                    compares[origin.key] = origin.revision
                    puts[origin.key] = o.encode()
            if await self.meta.txn(Txn(compares=compares, puts=puts)):
                return vol

    async def _new(self, tenant: str, name: str, size: int, extent_size: int,
                   profile: str | None) -> Volume:
        """A new volume's record (not stored), its name, size and extent size checked."""
        if not NAME_RE.match(name):
            raise InvalidInput("volume names are 1-63 letters, digits, '.', '_' or '-'")
        if size <= 0 or size % 4096 or size > MAX_VOLUME_BYTES:
            raise InvalidInput("volume size must be a positive multiple of 4 KiB, at most 1 EiB")
        seg = self.cfg.segment_size
        if not (MiB <= extent_size <= 4 * MiB) or extent_size % seg:
            raise InvalidInput(f"extent size must be 1-4 MiB and a multiple of {seg} bytes")
        await self.tenants.kek(tenant)  # the tenant exists and has a live key
        prof = self.cfg.profile(profile)
        return Volume(id=secrets.token_hex(16), tenant=tenant, name=name, size=size,
                      extent_size=extent_size, created=time.time(), profile=prof.name)

    async def create(self, tenant: str, name: str, size: int, extent_size: int = 1 * MiB,
                     profile: str | None = None) -> Volume:
        """A new volume; the tenant record is compared (`tenant_compare`): none is made
        unless the tenant is active, so none outlives a tenant delete."""
        vol = await self._new(tenant, name, size, extent_size, profile)
        k = volume_key(tenant, name)
        for _ in range(8):  # again only when the tenant record alone moved (an edit)
            owner = await tenant_compare(self.meta, tenant)
            if await self.meta.txn(Txn(compares={k: 0, **owner}, puts={k: vol.encode()})):
                return vol
            if await self.meta.get(k) is not None:
                raise Conflict(f"volume {name!r} already exists")
        raise Conflict(f"tenant {tenant!r} kept changing while volume {name!r} was made; "
                       "nothing was made: try again")

    async def list(self, tenant: str) -> list[Volume]:
        return [Volume.decode(i.value)
                async for i in scan_prefix(self.meta, volume_prefix(tenant))]

    async def resize(self, tenant: str, name: str, size: int) -> Volume:
        def grow(v: Volume) -> None:
            if size % 4096 or size < v.size or size > MAX_VOLUME_BYTES:
                raise InvalidInput(f"volumes only grow, in 4 KiB steps, up to 1 EiB (now "
                                   f"{v.size} bytes)")
            v.size = size
        return await self._update(tenant, name, grow)

    async def lease(self, vid: str) -> dict[str, Any] | None:
        """The attach lease record (released or expired ones too), or None."""
        item = await self.meta.get(volume_lease_key(vid))
        return unpack(item.value) if item else None

    async def attached_by(self, vid: str, watching: Watching | None = None,
                          ) -> dict[str, Any] | None:
        """The lease record of the writer attached right now, or None: decided as a taker
        decides (`lease_holds`), so what the mount pre-check says is what a mount
        would find (by the wall clocks, a host whose clock ran a ttl ahead called a live
        writer's lease free, and its mount started a daemon only to be refused a ttl later).
        A lease that looks expired or clock-skewed is watched for up to its ttl (`watching`
        is told, `lease_holds`)."""
        item = await self.meta.get(volume_lease_key(vid))
        return unpack(item.value) if await lease_holds(self.meta, item,
                                                       watching=watching) else None

    async def attached_at_a_glance(self, vid: str) -> dict[str, Any] | None:
        """What `show` reports without waiting: the live writer's lease record, or one whose
        liveness only a ttl's watch could settle (a writer that died on another host, or
        clocks that disagree), marked `unconfirmed`; None when nobody holds it. A mount or
        delete still decides by `attached_by`, which watches."""
        item = await self.meta.get(volume_lease_key(vid))
        held = lease_at_a_glance(item)
        if held is False or item is None:
            return None
        rec = unpack(item.value)
        return rec if held else {**rec, "unconfirmed": True}

    async def delete(self, tenant: str, name: str, watching: Watching | None = None) -> None:
        """Delete a volume no writer holds (a lease only a watch can settle is watched for
        its ttl; `watching` is told, `lease_holds`)."""
        vol, item = await self._get(tenant, name)
        if vol.clones:
            raise Conflict(f"volume {name!r} has clones ({', '.join(vol.clones)}): "
                           "flatten or delete them first")
        lease = await self.meta.get(volume_lease_key(vol.id))
        if await lease_holds(self.meta, lease, watching=watching):
            raise VolumeAttached(  # what to do next, not only who holds it (newuser22)
                f"volume {name!r} is attached by {unpack(lease.value)['holder']}"  # type: ignore[union-attr]
                ": unmount it there first (`tessera volume unmount DIR`), then delete it")
        # the lease compared too: a writer that attached since the look is not deleted under.
        # The record moves to (VD, id) in the same transaction, and leaves it only once its
        # pointers are retired and its origins unlinked: a delete killed in between is
        # finished by the reclaim worker (`storage/workers/reclaim.py`)
        gone = volume_gone_key(vol.id)
        if not await self.meta.txn(Txn(compares={item.key: item.revision,
                                                 volume_lease_key(vol.id):
                                                     lease.revision if lease else 0,
                                                 gone: 0},
                                       puts={gone: item.value},
                                       deletes=(item.key, volume_lease_key(vol.id),
                                                journal_head_key(vol.id)))):
            raise Conflict(f"volume {name!r} changed while being deleted; retry")
        while (left := await self.meta.get(gone)) is not None:
            await gone_volume_step(self.meta, left, self.gc_grace_s)

    # snapshots and clones -------------------------------------------------------------------

    async def snapshot(self, tenant: str, name: str, snap: str,
                       flushed: Collection[int] | None = None) -> int:
        """Freeze the committed extent map: returns the snapshot's generation.

        A snapshot freezes extents only, so every fsynced write must be folded out of the
        journal first. A live writer folds its own (`quiesce`, on its host): `flushed` names
        the pids of the local daemons the caller quiesced (None: the caller folded it
        itself); a live writer not among them whose journal holds segments is refused, it
        is another host's or stopped. Segments left by a writer that is gone (killed, or
        paused past its lease) are replayed here, attached as the next mount would, and
        frozen before detaching.
        """
        check_snapshot_name(snap)
        while True:
            vol = await self.get(tenant, name)
            head = await self.meta.get(journal_head_key(vol.id))
            if not await self.meta.range(*span(journal_prefix(vol.id)), limit=1):
                # Unless no append landed meanwhile (a live writer elsewhere may append a
                # page and then commit a later write to an extent before the freeze).
                g = await self.freeze(tenant, name, snap, (journal_head_key(vol.id),
                                                           head.revision if head else 0))
                if g is not None:
                    return g
                continue
            # held as a taker judges it (`lease_holds`), not by the wall clocks: a live writer
            # whose clock is a ttl behind this one's looked free here, `open` below found it
            # held, and the loop ran forever
            item = await self.meta.get(volume_lease_key(vol.id))
            lease = unpack(item.value) if await lease_holds(self.meta, item) else None
            if lease is not None:
                if flushed is None or any(lease.get("proc") == local_process(p)
                                          for p in flushed):
                    return await self.freeze(tenant, name, snap)
                raise VolumeAttached(
                    f"volume {name!r} is attached by {lease['holder']}, which cannot be "
                    "flushed from here (another host, or a stopped process), and its journal "
                    "holds writes not yet in extents: snapshot it on the host that mounts it")
            try:
                h = await self.open(tenant, name, holder=f"snapshot:{secrets.token_hex(4)}")
            except VolumeAttached:
                continue  # a writer attached meanwhile
            try:
                return await self.freeze(tenant, name, snap)
            finally:
                await h.close()

    async def freeze(self, tenant: str, name: str, snap: str,
                     guard: tuple[bytes, int] | None = None,
                     journal: tuple[int, int] | None = None) -> int | None:
        """Add the snapshot at the volume's generation (returned) and bump it. `guard`: a key
        and the revision it must still have (a journal head: no append landed; a writer's
        lease: still its own); None when it changed, and nothing is frozen. `journal`: the
        segments [lo, hi] the snapshot replays over its extents (storage/volume_held.py)."""
        while True:
            v, item = await self._get(tenant, name)
            if any(s["name"] == snap for s in v.snapshots.values()):
                raise Conflict(f"volume {name!r} already has a snapshot {snap!r}")
            frozen = v.gen
            v.snapshots[v.gen] = {"name": snap, "created": time.time()}
            if journal is not None:
                v.snapshots[v.gen]["journal"] = list(journal)
            v.gen += 1
            cmp = {item.key: item.revision}
            if guard is not None:
                cmp[guard[0]] = guard[1]
            if await self.meta.txn(Txn(compares=cmp, puts={item.key: v.encode()})):
                return frozen
            if guard is not None:
                cur = await self.meta.get(guard[0])
                if (cur.revision if cur else 0) != guard[1]:
                    return None

    async def delete_snapshot(self, tenant: str, name: str, snap: str) -> None:
        cur = await self.get(tenant, name)
        g0 = cur.snapshot_gen(snap)
        others = set()  # clones made from other snapshots do not hold this one
        for c in cur.clones:
            ct, _, cn = c.partition("/")
            item = await self.meta.get(volume_key(ct, cn))
            bases = [b for b in Volume.decode(item.value).origins()
                     if b.get("id") == cur.id] if item is not None else []
            if bases and all(b.get("gen") != g0 for b in bases):
                others.add(c)

        def drop(v: Volume) -> None:
            g = v.snapshot_gen(snap)
            for c in v.clones:
                if g != g0 or c not in others:  # a clone linked meanwhile: stay safe
                    raise Conflict(f"snapshot {snap!r} has clone {c} (or a snapshot of it "
                                   "taken before a flatten): delete them first")
            del v.snapshots[g]
        # (unlinks an origin none reads now); the collect marker, in the same transaction,
        # has the reclaim worker retire what the snapshot kept if this process dies first
        # A marker of this delete's own (a fresh token): a concurrent delete on the volume
        # puts its own, so neither drops the other's when it finishes.
        mark = volume_collect_key(cur.id, secrets.token_hex(8))
        vol = await self._update(tenant, name, drop,
                                 also={mark: pack({"tenant": tenant, "name": name})})
        await self._collect(vol)
        await held.free(self, vol)
        await self.meta.txn(Txn(deletes=(mark,)))

    async def finish_collect(self, item: Item) -> None:
        """Retire what the snapshots deleted from a volume kept, for its collect marker
        `item` (left by a snapshot delete that was killed), then drop the marker."""
        ref = unpack(item.value)
        try:
            vol = await self.get(str(ref["tenant"]), str(ref["name"]))
        except NotFound:
            vol = None  # deleted since: its delete retired everything
        if vol is not None and vol.id == unpack_key(item.key)[1]:
            await self._collect(vol)
            await held.free(self, vol)
        await self.meta.txn(Txn(compares={item.key: item.revision}, deletes=(item.key,)))

    async def _collect(self, vol: Volume) -> None:
        """Retire pointers no snapshot needs any more (never the newest of an extent)."""
        snaps = sorted(vol.snapshots)
        group: list[Item] = []
        dead: list[Item] = []

        def judge(items: list[Item]) -> None:
            gens = [decode_pointer(i.value).gen for i in items]
            for n, it in enumerate(items[:-1]):
                lo, hi = gens[n], gens[n + 1]
                if not any(lo <= s < hi for s in snaps):
                    dead.append(it)
        async for it in scan_prefix(self.meta, extent_prefix(vol.id)):
            if group and unpack_key(it.key)[:3] != unpack_key(group[0].key)[:3]:
                judge(group)
                group = []
            group.append(it)
        if group:
            judge(group)
        for i in range(0, len(dead), 256):
            await retire(self.meta, dead[i:i + 256], self.gc_grace_s)

    async def clone(self, tenant: str, name: str, snap: str, new_name: str) -> Volume:
        """A new volume reading through snapshot `snap` of `name`: its record and its link
        in the origin's clones are written in one transaction (a process killed meanwhile
        leaves both or neither)."""
        parent = await self.get(tenant, name)
        vol = await self._new(tenant, new_name, parent.size, parent.extent_size,
                              parent.profile)
        k, me = volume_key(tenant, new_name), f"{tenant}/{new_name}"
        while True:
            parent, item = await self._get(tenant, name)
            vol.base = {"tenant": tenant, "name": name, "id": parent.id,
                        "gen": parent.snapshot_gen(snap)}  # (still there)
            if me not in parent.clones:
                parent.clones.append(me)
            owner = await tenant_compare(self.meta, tenant)  # as `create`
            if await self.meta.txn(Txn(compares={item.key: item.revision, k: 0, **owner},
                                       puts={item.key: parent.encode(), k: vol.encode()})):
                return vol
            if await self.meta.get(k) is not None:
                raise Conflict(f"volume {new_name!r} already exists")

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
                if idx in h.patches or p is not None and p.vid != vol.id:
                    data = await h.read_extent(idx)
                    if data is not None:
                        await h.write_extent(idx, data)

            def cut(v: Volume) -> None:
                for s in v.snapshots.values():  # taken before: they still read through it
                    s.setdefault("base", v.base)
                v.base = None
            return await self._update(tenant, name, cut)  # (unlinks the origin with it)
        finally:
            await h.close()

    # attach --------------------------------------------------------------------------------

    async def open(self, tenant: str, name: str, holder: str, lease_ttl_s: float = LEASE_TTL_S,
                   snapshot: str | None = None, watched: int = 0) -> VolumeHandle:
        """Attach for I/O (takes the lease), or open a snapshot read-only (no lease).
        `watched`: the revision of a lease record the caller already watched for its ttl
        without a renewal (`attached_by`): still that revision, it is not watched again."""
        vol = await self.get(tenant, name)
        h = VolumeHandle(self, vol, holder, lease_ttl_s)
        if snapshot is None:
            await h.acquire(watched)
        else:
            h.read_only_gen = vol.snapshot_gen(snapshot)
        try:
            await h.load_map()
            h.patches = await held.patches(h, set() if snapshot else set(h.own_extents()))
            if snapshot is None:  # a writer that died left journal segments: fold them in
                h.journal_seq = await recover(h)
        except BaseException:
            await h.close()
            raise
        return h

    async def stored_bytes(self, tenant: str, name: str) -> int:
        vol = await self.get(tenant, name)
        total = 0
        async for it in scan_prefix(self.meta, extent_prefix(vol.id)):
            total += decode_pointer(it.value).size
        return total
