"""An attached block volume: extent reads and atomic, lease-fenced extent commits.

A handle holds the attach lease (renewed in the background) and the extent map it loaded;
every commit compares the lease and the volume record revisions, so a fenced writer cannot
commit. Extents go through the same encrypt + erasure-code pipeline as objects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

from storage import commit_nodes, leaseclock
from storage.crypto import keys
from storage.crypto.aead import SegmentCipher
from storage.erasure import ErasureCodec
from storage.errors import (
    InvalidInput,
    KeyUnavailable,
    NodeRemoved,
    NotFound,
    QuorumNotReached,
    StorageError,
    WriteExpired,
)
from storage.keyspace import (
    discarded_key,
    extent_prefix,
    gc_key,
    repair_key,
    stripe_index_key,
    volume_key,
    volume_lease_key,
)
from storage.leases import local_process
from storage.metadata import Item, Txn
from storage.pipeline import StripeCodec, segment_count
from storage.records import pack, unpack
from storage.shards.ids import new_stripe_id
from storage.volume_ranges import ByteRanges
from storage.volume_records import (
    WRITE_ATTEMPTS,
    Fenced,
    Pointer,
    Volume,
    VolumeAttached,
    decode_pointer,
    extent_identity,
    lease_holds,
    scan_prefix,
)
from storage.volume_spill import PageSpill

# a fenced transaction's puts, deletes and compares (besides the lease and volume record)
Built = tuple[dict[bytes, bytes], tuple[bytes, ...], dict[bytes, int]]

if TYPE_CHECKING:
    from storage.volumes import VolumeService

log = logging.getLogger("tessera.volumes")


class VolumeHandle(ByteRanges):
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
        # Journal writes a snapshot read here holds over an extent it does not own (its own
        # extents, or its origin's), in order (storage/volume_held.py); with `levels`, the
        # (volume, generation, pointers) a read goes through, nearest first.
        # {(offset, length): position in `spill`} (storage/volume_spill.py)
        self.patches: dict[int, dict[tuple[int, int], int]] = {}
        self.spill: PageSpill | None = None
        self.levels: list[tuple[Volume, int, dict[int, Pointer]]] = []
        self._ciphers: dict[bytes, SegmentCipher] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._proc = local_process()
        self.fenced = False
        self._renewed_at = -float("inf")  # leaseclock: when the last acquire/renewal began
        self._renewal: asyncio.Future[None] | None = None  # the one `check_held` waits on
        self.revoked = False  # its tenant was shredded: the caches above it serve nothing
        self._active_until = 0.0  # leaseclock: the tenant was last seen active + the lease ttl
        self.journal_seq = 0  # the journal sequence in use after attach (see volume_journal)
        # told the record's size at each renewal (a resize taken on another host): the mount
        # daemon grows its device (gateway/block/growwatch.py)
        self.on_grown: Callable[[int], None] | None = None
        self._watch_failed = False

    # lease ---------------------------------------------------------------------------------

    async def acquire(self, watched: int = 0) -> None:
        """Take the attach lease with a token larger than any this volume has seen.

        The record outlives its holders (a release only marks it released), so tokens never
        repeat. A live lease of another process refuses, unless that process is gone from
        this very host (then there is nobody to wait for). A record still at revision
        `watched` (one its caller watched a ttl unrenewed) is not watched a second time.
        """
        k = volume_lease_key(self.vol.id)
        while True:
            item = await self.svc.meta.get(k)
            cur = unpack(item.value) if item else None
            stale = bool(watched) and item is not None and item.revision == watched
            if cur and not stale and await lease_holds(self.svc.meta, item, self.ttl):
                left = cur["expires"] - time.time()
                raise VolumeAttached(
                    f"volume {self.vol.name!r} is already attached by {cur['holder']} "
                    + (f"(lease expires in {left:.0f}s)" if 0 < left <= self.ttl * 2 else
                       "(it renews its lease; its clock and this host's disagree)")
                    + "; unmount it there first")
            token = int(cur["token"] if cur else 0) + 1
            start = leaseclock.now()
            rec = pack({"holder": self.holder, "token": token, "expires": time.time() + self.ttl,
                        "ttl": self.ttl, "proc": self._proc})
            if await self.svc.meta.txn(Txn(compares={k: item.revision if item else 0},
                                           puts={k: rec})):
                self.token = token
                self._renewed_at = start
                self._lease_rev = (await self.svc.meta.get(k)).revision  # type: ignore[union-attr]
                break
        self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())

    async def lease_guard(self) -> tuple[bytes, int]:
        """The lease key and its revision once renewed now (Fenced if it is not ours): a
        transaction comparing them commits only while this handle still holds the lease."""
        await self.renew()
        return volume_lease_key(self.vol.id), self._lease_rev

    def _ours(self, item: Item | None) -> bool:
        """The lease record still names this handle: same holder and same token."""
        cur = unpack(item.value) if item is not None else None
        return bool(cur) and cur.get("holder") == self.holder and cur.get(
            "token") == self.token and not cur.get("released")

    def _lost(self) -> Fenced:
        self.fenced = True
        return Fenced(f"volume {self.vol.name!r}: attach lease was taken over (fenced)")

    async def renew(self) -> None:
        """Extend the lease, only if holder and token are still ours (else: fenced)."""
        k = volume_lease_key(self.vol.id)
        while True:
            item = await self.svc.meta.get(k)
            if self.fenced or item is None or not self._ours(item):
                raise self._lost()
            start = leaseclock.now()
            rec = pack({"holder": self.holder, "token": self.token,
                        "expires": time.time() + self.ttl, "ttl": self.ttl, "proc": self._proc})
            if await self.svc.meta.txn(Txn(compares={k: item.revision}, puts={k: rec})):
                after = await self.svc.meta.get(k)
                if after is None or not self._ours(after):
                    raise self._lost()
                self._lease_rev = after.revision
                self._renewed_at = start
                return

    def lease_valid(self) -> bool:
        """Whether the lease is surely still ours by this process's own clock: not fenced,
        and renewed within its ttl (a taker waits at least that long). A commit compares the
        lease anyway; this is for what the driver serves from memory (overlay pages, cached
        extents) and the writes it accepts there: a daemon stopped past its lease and resumed
        must not answer from them while another writer holds the volume."""
        if self.read_only_gen is not None:
            return True  # a snapshot: read-only, no lease
        return not self.fenced and leaseclock.now() - self._renewed_at < self.ttl

    def check_fenced(self) -> None:
        """Raise Fenced once this handle lost the lease: it commits nothing, and a barrier
        can promise nothing (writes that arrived after it learned were refused, EIO)."""
        if self.fenced:
            raise Fenced(f"volume {self.vol.name!r}: attach lease lost (fenced)")

    async def check_held(self) -> None:
        """Return once the lease is surely ours (renewing it now when `lease_valid` cannot
        tell); Fenced when another writer took it, StorageError when the store cannot say.
        Concurrent callers share one renewal: after a pause, every request in flight (64
        write-backs) would otherwise race a renewal each, all but one failing its compare."""
        if self.lease_valid():
            return
        if self._renewal is None or self._renewal.done():
            self._renewal = asyncio.ensure_future(self.renew())
            self._renewal.add_done_callback(self._renewal_done)
        await asyncio.shield(self._renewal)

    def _renewal_done(self, f: asyncio.Future[None]) -> None:
        """Retrieve a shared renewal's outcome: when every waiter was cancelled (an unmount,
        FUSE interrupts) the shield drops its callback, and an expected failure (Fenced, the
        store cannot say) would be logged as never retrieved. Anything else is a bug in
        `renew`, logged here as asyncio would have (review21d: it was swallowed)."""
        if f.cancelled():
            return
        exc = f.exception()
        if exc is not None and not isinstance(exc, StorageError):
            log.error("volume %s: the lease renewal failed", self.vol.name, exc_info=exc)

    async def _renew_loop(self) -> None:
        while not self.fenced:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.renew()
                await self.check_revoked()
                await self._watch_size()
            except Fenced:
                log.warning("volume %s: the attach lease was taken over (fenced): its I/O "
                            "fails from now on; unmount it here", self.vol.name)
                return
            except StorageError:
                continue

    async def _watch_size(self) -> None:
        """Tell `on_grown` the record's size: a resize on another host grows only that
        host's mounts (`mount.grow_mounted`); this is how a mount anywhere sees it within a
        renewal interval (ttl/3). `vol` itself is replaced when the mount takes the size
        (`refresh`)."""
        if self.on_grown is None:
            return
        size = Volume.decode((await self._record()).value).size
        try:
            self.on_grown(size)
        except Exception:  # (a thread not started): the renewals go on (review22g F8)
            if not self._watch_failed:
                log.exception("volume %s: the size watch failed (logged once; the lease is "
                              "still renewed)", self.vol.name)
            self._watch_failed = True

    async def check_revoked(self) -> None:
        """Raise KeyUnavailable once the volume's tenant is shredded (seen within
        SHORT_TTL_S; the renewal loop asks every third of the lease): the block driver's
        caches in front of this handle (clean extents, overlay pages: plaintext) then serve
        nothing either, as the extents' own reads (`_cipher`) do not."""
        if not self.revoked:
            try:
                active = await self.svc.tenants.active(self.vol.tenant)
            except StorageError:
                if not self._still_trusted():
                    raise
                active = True
            else:
                if active:
                    self._active_until = leaseclock.now() + self.ttl
            self.revoked = not active
        if self.revoked:
            raise KeyUnavailable(f"the keys of tenant {self.vol.tenant!r} were destroyed")

    def _still_trusted(self) -> bool:
        """Whether the tenant record, unreadable now (an etcd election, a slow store), was
        seen active within the lease ttl: a shred needs the store too, and a daemon cut off
        from it longer than that has lost its lease anyway; until then the caches and the
        ciphers kept serve (EIO here makes ext4 abort its journal)."""
        return leaseclock.now() < self._active_until

    async def close(self) -> None:
        """Detach: stop renewing and mark the lease released if it is still ours.

        The record stays (with its token) so the next holder's token is larger still. A
        renewal that lands between the read and the write (the renewer's txn outlives its
        cancel) is retried over, else the lease would stay held until it expired.
        """
        if self.spill is not None:
            self.spill.close()
            self.spill = None
            self.patches = {}
        if self._renewer:
            self._renewer.cancel()
            self._renewer = None
            k = volume_lease_key(self.vol.id)
            while (item := await self.svc.meta.get(k)) is not None and self._ours(item):
                rec = pack({"holder": self.holder, "token": self.token, "expires": 0.0,
                            "released": True})
                if await self.svc.meta.txn(Txn(compares={k: item.revision}, puts={k: rec})):
                    return

    # map -----------------------------------------------------------------------------------

    async def load_map(self) -> None:
        vol_item = await self.svc.meta.get(volume_key(self.vol.tenant, self.vol.name))
        if vol_item is None:
            raise NotFound(f"volume {self.vol.name!r} does not exist")
        self.vol = Volume.decode(vol_item.value)
        self._vol_rev = vol_item.revision
        self._own = await self._map_of(self.vol.id, self.read_only_gen)
        self._base = {}
        self.levels = []
        if self.read_only_gen is not None:
            self.levels.append((self.vol, self.read_only_gen, self._own))
        b = self.vol.base_at(self.read_only_gen)
        while b:  # a clone of a clone reads through the whole chain
            parent = await self.svc.get(b["tenant"], b["name"])
            level = await self._map_of(parent.id, b["gen"])
            self.levels.append((parent, b["gen"], level))
            for idx, p in level.items():
                self._base.setdefault(idx, p)
            b = parent.base_at(b["gen"])

    async def _map_of(self, vid: str, upto: int | None) -> dict[int, Pointer]:
        out: dict[int, Pointer] = {}
        async for it in scan_prefix(self.svc.meta, extent_prefix(vid)):
            p = decode_pointer(it.value)
            if upto is None or p.gen <= upto:
                out[p.index] = p  # keys ascend by generation: the last one wins
        return out

    def own_extents(self) -> list[int]:
        """The extents this volume stores itself (not through its origin)."""
        return list(self._own)

    def holds_data(self, idx: int) -> bool:
        """Whether extent idx reads as anything but zeros without a write here: a pointer
        (its own or an origin's) or journal pages a snapshot under it holds (`patches`)."""
        return self.pointer(idx) is not None or idx in self.patches

    def pointer(self, idx: int) -> Pointer | None:
        p = self._own.get(idx)
        return p if p is not None else self._base.get(idx)

    def allocated(self) -> int:
        return sum(1 for i in range(self.vol.extents)
                   if (p := self.pointer(i)) is not None and not p.trim or i in self.patches)

    # extent I/O ------------------------------------------------------------------------------

    async def _cipher(self, p: Pointer, tenant: str) -> SegmentCipher:
        c = self._ciphers.get(p.stripe)
        try:  # asked every time: a shred stops an open volume's reads within
            # TenantService's bound, its memo (ciphers of the extents it read or wrote)
            # notwithstanding
            _, kek = await self.svc.tenants.kek(tenant, p.kek_version)
        except (KeyUnavailable, NotFound):  # shredded, or reclaimed since
            raise
        except StorageError:
            if c is not None and self._still_trusted():
                return c  # the store is unreachable: see `_still_trusted`
            raise
        self._active_until = leaseclock.now() + self.ttl
        if c is None:
            c = SegmentCipher(keys.unwrap_dek(kek, tenant, extent_identity(tenant, p), p.dek))
            if len(self._ciphers) > 4096:
                self._ciphers.clear()
            self._ciphers[p.stripe] = c
        return c

    @staticmethod
    def _codec(p: Pointer, cipher: SegmentCipher, tenant: str) -> StripeCodec:
        """An extent's codec (also the workers' keyed check: storage/volume_stripe_keys.py)."""
        return StripeCodec(cipher=cipher, codec=ErasureCodec(p.k, p.m),
                           identity=extent_identity(tenant, p), part=p.index, stripe_id=p.stripe,
                           segment_size=p.segment_size)

    def extent_len(self, idx: int) -> int:
        return self.vol.extent_len(idx)  # (at the record this handle holds now)

    def fit(self, idx: int, data: bytes) -> bytes:
        return self.vol.fit(idx, data)  # (`Volume.fit`)

    async def read_extent(self, idx: int) -> bytes | None:
        """The extent's bytes, or None if never written / trimmed (zeros).

        An allocated extent that cannot be rebuilt raises (DataUnavailable): never zeros.
        """
        patches = self.patches.get(idx)  # a writer drops them with its first own pointer
        stored = await self._read_stored(idx)
        if not patches:
            return stored
        buf = bytearray(stored if stored is not None else bytes(self.extent_len(idx)))
        assert self.spill is not None
        for (off, n), at in patches.items():
            buf[off:off + n] = self.spill.get(at, n)[:max(0, len(buf) - off)]
        return bytes(buf)

    async def _read_stored(self, idx: int) -> bytes | None:
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
        return self.fit(idx, bytes(out[:self.extent_len(idx)]))

    def journal_floor(self) -> int:
        """The largest journal sequence any own extent pointer has folded in."""
        return max((p.jseq for p in self._own.values()), default=0)

    async def write_extent(self, idx: int, data: bytes, jseq: int = 0) -> None:
        """Store a whole extent as a new stripe and commit its pointer (fenced).

        `jseq`: the journal sequence this extent includes (journal entries up to it that
        cover this extent are then stale); 0 keeps the previous pointer's. Bytes short of
        the extent's length are zeros, as a read pads a stored extent: a short last extent
        that the volume outgrew (resized while attached) is built over the bytes stored or
        cached at its old length; refused, it failed every barrier and fold until detach."""
        if self.read_only_gen is not None:
            raise InvalidInput("snapshots are read-only")
        data = self.fit(idx, data)
        tenant = self.vol.tenant
        prof = self.svc.cfg.profile(self.vol.profile)
        for attempt in range(WRITE_ATTEMPTS):
            # Each attempt is a new stripe under a new key: a nonce is never reused even if
            # an earlier attempt left partial shards behind (the orphan sweep takes those).
            kek_version, kek = await self.svc.tenants.kek(tenant)
            p = Pointer(vid=self.vol.id, index=idx, gen=self.vol.gen, stripe=new_stripe_id(),
                        size=len(data), k=prof.k, m=prof.m,
                        segment_size=self.svc.cfg.segment_size, kek_version=kek_version,
                        jseq=jseq or self.jseq_of(idx))
            dek = keys.new_dek()
            p.dek = keys.wrap_dek(kek, tenant, extent_identity(tenant, p), dek)
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
        except (Fenced, NotFound, NodeRemoved) as exc:
            # The commit surely failed (a compare did): nothing points at the new stripe.
            await self.svc.meta.put(gc_key(time.time_ns(), p.stripe), pack({"nodes": p.nodes}))
            if isinstance(exc, NodeRemoved):  # placed on a node removed meanwhile: written
                # again on the map as `_commit` re-read it (each retry needs a new removal)
                return await self.write_extent(idx, data, jseq)
            raise
        # Anything else (cancelled, a metadata error) may have committed all the same: never
        # collect a stripe that a pointer may name; the orphan sweep takes it if none does.
        queue = self.svc.stripes.spares.repair_entry(p.stripe, res.nodes, p.m)
        if queue is not None:  # short (urgent) or a zone over m (a spill): as objects queue
            await self.svc.meta.put(queue, pack({"volume": self.vol.id, "reason": "write"}))
        self._ciphers[p.stripe] = SegmentCipher(dek)

    def jseq_of(self, idx: int) -> int:
        p = self._own.get(idx)
        return p.jseq if p is not None else 0

    async def trim_extent(self, idx: int, jseq: int = 0) -> None:
        """Punch a whole extent: it reads as zeros and (unless a snapshot holds it) frees."""
        if not self.holds_data(idx) and not jseq:
            return
        await self._commit(Pointer(vid=self.vol.id, index=idx, gen=self.vol.gen, trim=True,
                                   jseq=jseq or self.jseq_of(idx)))

    async def _commit(self, p: Pointer) -> None:
        """Put the pointer, retiring what it replaces unless a snapshot still needs it."""
        while True:
            self.check_fenced()
            if not p.trim and not p.seal_gen and p.gen != self.vol.gen:
                p.seal_gen = p.gen  # sealed before a snapshot bumped the generation
            p.gen = self.vol.gen
            prev = self._own.get(p.index)
            puts: dict[bytes, bytes] = {}
            deletes: list[bytes] = []
            keep_prev = prev is not None and prev.gen < p.gen and any(
                prev.gen <= s for s in self.vol.snapshots)
            # Leave no record only where no older pointer can exist (generation 1: never a
            # snapshot); otherwise deleting ours would bring an older extent back to life.
            hole = (p.trim and not keep_prev and p.index not in self._base and p.gen == 1
                    and not p.jseq and p.index not in self.patches)
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
            lk = volume_lease_key(self.vol.id)
            compares = {vk: self._vol_rev, lk: self._lease_rev}
            if not p.trim:  # a fresh stripe: never indexed once its write was discarded,
                compares[discarded_key(p.stripe)] = 0  # nor naming a node removed since
                commit_nodes.guard(self.svc.stripes.health, p.nodes, compares)
            ok = await self.svc.meta.txn(Txn(compares=compares, puts=puts,
                                             deletes=tuple(deletes)))
            if ok:
                if hole:
                    self._own.pop(p.index, None)
                else:
                    self._own[p.index] = p
                    self.patches.pop(p.index, None)  # stored whole now: nothing shows through
                return
            if not p.trim:
                await self.refuse_discarded(p.stripe)
                await commit_nodes.recheck(self.svc.meta, self.svc.cfg, self.svc.stripes.health,
                                           compares)
            await self._resync()

    async def refuse_discarded(self, stripe: bytes) -> None:
        """After a failed commit indexing the fresh `stripe`: WriteExpired when its write was
        discarded (its `XD` tombstone exists: the collector may have deleted its shards),
        instead of committing again and again against a compare that cannot hold. The same
        rule as object commits (`ObjectService.index_part`)."""
        if await self.svc.meta.get(discarded_key(stripe)) is not None:
            raise WriteExpired(f"stripe {stripe.hex()} was discarded: its write is not "
                               "committed")

    async def fenced_build(self, build: Callable[[], Awaitable[Built]]) -> None:
        """Commit what `build()` returns (puts, deletes, more compares) only while this
        handle holds the lease (else Fenced), built again
        from the volume record as it is after each failed compare (a snapshot taken
        meanwhile may change it) and from the records it read itself."""
        while True:
            self.check_fenced()
            vk = volume_key(self.vol.tenant, self.vol.name)
            lk = volume_lease_key(self.vol.id)
            # the record's revision as `build` starts: another commit of this handle may
            # re-read the record (a snapshot frozen meanwhile) while `build` awaits, and
            # this one must not then commit what it built from the record before it
            vol_rev = self._vol_rev
            puts, deletes, more = await build()
            if await self.svc.meta.txn(Txn(compares={**more, vk: vol_rev,
                                                     lk: self._lease_rev},
                                           puts=puts, deletes=deletes)):
                return
            await self._resync()

    async def refresh(self) -> Volume:
        """The volume record as stored now (a resize while attached; Fenced once the lease
        is lost). Only `vol` is replaced, not the revision commits compare: one being built
        meanwhile fails its compare and is built again from the record (`_resync`). The lease
        is checked held, not just not known lost: a writer paused past its lease and resumed
        must not take a size (review22g: its renewal's record read grew a fenced mount)."""
        await self.check_held()
        self.vol = Volume.decode((await self._record()).value)
        return self.vol

    async def _record(self) -> Item:
        """The volume's record as stored now (NotFound once it was deleted)."""
        vi = await self.svc.meta.get(volume_key(self.vol.tenant, self.vol.name))
        if vi is None:
            raise NotFound(f"volume {self.vol.name!r} was deleted")
        return vi

    async def _resync(self) -> None:
        """A compare failed: re-read the lease (fenced?) and the volume record (snapshot?)."""
        item = await self.svc.meta.get(volume_lease_key(self.vol.id))
        if item is None or not self._ours(item):
            raise self._lost()
        self._lease_rev = item.revision
        vi = await self._record()
        self.vol = Volume.decode(vi.value)
        self._vol_rev = vi.revision
