"""Objects: versions, manifests and their atomic commit, over stripes of encrypted shards.

A PUT streams the data to the nodes, then commits the manifest with one compare-and-swap
transaction that also indexes its stripes (X/) and retires the version it replaces; shards
of a PUT that never commits have no X/ entry and are collected by the orphan sweep. Reads use only
the manifest: placement is never recomputed on the read path.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from storage import commit_nodes, inline_bodies, object_lock, retiring
from storage.buckets import BucketService
from storage.conditions import WriteConditions
from storage.config import Config
from storage.crypto import keys
from storage.crypto.aead import SegmentCipher
from storage.crypto.keys import segment_aad
from storage.crypto.md5 import md5 as new_md5
from storage.datakeys import DataKeys, etag_for, identity
from storage.erasure import ErasureCodec
from storage.keyspace import (
    bucket_key,
    discarded_key,
    object_key,
    stripe_index_key,
    tenant_key,
    unpack,
    version_key,
)
from storage.kms import KmsService
from storage.listing import NULL_VERSION, Listing
from storage.lock_clock import LockClock
from storage.metadata import MetadataStore, Txn
from storage.metadata.fence import cleanup_outside_step
from storage.object_edits import ObjectEdits
from storage.object_reads import ObjectReads
from storage.pipeline import StripeCodec
from storage.records import Bucket, ObjectVersion, PartLayout, pack
from storage.shards.ids import new_stripe_id
from storage.stripes import StripeStore
from storage.telemetry import STAGES
from storage.tenants import TenantService
from storage.testing.crash_points import die_at
from storage.version_ids import commit_sort, new_version_id, sorted_at, version_sort
from storage.version_retire import retire_version
from storage.write_age import WriteAge

Finalizer = Callable[[ObjectVersion], Awaitable[None]]


@dataclass
class ObjectAttributes:
    """What a writer says about a new object: its headers, class, tags and encryption."""

    content_type: str = "binary/octet-stream"
    user_meta: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    storage_class: str = "STANDARD"
    tags: dict[str, str] = field(default_factory=dict)
    sse: dict[str, str] = field(default_factory=dict)
    sse_c_key: bytes | None = None  # SSE-C: the customer's 256-bit key wraps the DEK; never stored
    acl: dict[str, Any] = field(default_factory=dict)  # S3 ACL (owner, grants); {} = private
    lock: dict[str, object] = field(default_factory=dict)  # Object Lock settings from headers


@dataclass
class PutOptions(ObjectAttributes):
    size_hint: int | None = None
    digests: Sequence[object] = ()
    conditions: WriteConditions | None = None
    # the tenant that signed the write when it is not the bucket's (a grant): its record
    # is compared in the commit, so a write authenticated before its `tenant delete`
    # (or shred) began does not commit after it (`commit`'s `writer`)
    writer: str | None = None


class ObjectService(ObjectReads, ObjectEdits):
    """Objects of every bucket: write and commit here; read and delete in the bases."""

    def __init__(self, cfg: Config, meta: MetadataStore, tenants: TenantService,
                 buckets: BucketService, stripes: StripeStore, gc_grace_s: float = 60.0) -> None:
        self._cfg = cfg
        self._meta = meta
        self._decoded = {}
        self._tenants = tenants
        self.tenants = tenants  # the workers' keyed checks of volume stripes
        self.buckets = buckets
        self._stripes = stripes
        # Object Lock expiry is judged by a clock never ahead of the nodes' (storage.lock_clock)
        self.lock_clock = LockClock(stripes.transport, stripes.cluster_nodes)
        self.gc_grace_s = gc_grace_s  # retired stripes wait this long (reads in flight)
        self.listing = Listing(meta)
        self.kms = KmsService(meta, tenants, cfg.gateway.region)
        self.data_keys = DataKeys(tenants, self.kms)

    def codec_for(self, v: ObjectVersion, part: PartLayout, cipher: SegmentCipher | None,
                  ) -> StripeCodec:
        return StripeCodec(cipher=cipher, codec=ErasureCodec(part.k, part.m),
                           identity=identity(v), part=part.number,
                           stripe_id=part.stripe_id, segment_size=part.segment_size)

    # write ---------------------------------------------------------------------------------

    async def put(self, b: Bucket, key: str, body: AsyncIterator[bytes],
                  opts: PutOptions, finalize: Finalizer | None = None) -> ObjectVersion:
        """Store a whole object from a stream into bucket `b` (the record the caller read);
        `finalize` may veto before commit (checksums)."""
        tenant, bucket = b.tenant, b.name
        version_id = new_version_id() if b.versioning == "Enabled" else NULL_VERSION
        ident_version = new_version_id()
        kek_version, kek, tenant_rev = await self._tenants.current_kek(tenant)
        v = ObjectVersion(bucket=bucket, key=key, version_id=version_id, tenant=tenant, size=0,
                          etag="", last_modified=0.0, kek_version=kek_version,
                          content_type=opts.content_type, user_meta=opts.user_meta,
                          headers=opts.headers, storage_class=opts.storage_class,
                          tags=opts.tags, sse=opts.sse, identity_version=ident_version,
                          acl=opts.acl,
                          lock=await object_lock.initial(b.config, dict(opts.lock),
                                                         self.lock_clock.floor))
        dek = keys.new_dek()
        kms_wrapping = await self.data_keys.kms_wrapping_for(v)
        self.data_keys.seal_dek(v, kek, dek, opts.sse_c_key, kms_wrapping)
        md5 = new_md5()
        cipher = SegmentCipher(dek)
        age = self.write_age()
        if (opts.size_hint is not None and 0 < opts.size_hint <= self._cfg.inline_max_bytes
                and not self._cfg.profile_for_class(opts.storage_class).compress):
            part = await self._inline_part(v, cipher, body, [md5, *opts.digests])
        else:
            part = await self.write_part(v, 1, cipher, body, [md5, *opts.digests],
                                         opts.size_hint, opts.storage_class, compress=True)
        v.size = part.plaintext_size
        v.etag = md5.hexdigest()
        part.etag = v.etag
        v.parts = [part]
        v.last_modified = time.time()
        try:
            if finalize is not None:
                await finalize(v)  # Content-MD5 is checked there, against the real MD5
            v.etag = part.etag = etag_for(v, v.etag, opts.sse_c_key, kms_wrapping)
            await self.commit(v, b, opts.conditions, tenant_rev=tenant_rev, age=age,
                              writer=opts.writer)
        except BaseException:
            await self.discard_parts(v.parts)
            raise
        return v

    def write_age(self) -> WriteAge:
        """Start timing a write that is about to send its first shard (see write_age)."""
        return WriteAge(self._cfg.repair.orphan_grace_s)

    async def _inline_part(self, v: ObjectVersion, cipher: SegmentCipher,
                           body: AsyncIterator[bytes], digests: Sequence[object]) -> PartLayout:
        """A small object sealed into its manifest: no shards, one metadata commit.

        Only below `inline_max_bytes` (the body checks its declared length, so this is
        bounded). The metadata store is already what every object depends on, so this
        adds no new way to lose data; with etcd it is replicated across the zones.
        """
        data = b"".join([chunk async for chunk in body])
        for d in digests:
            d.update(data)  # type: ignore[attr-defined]
        sealed = cipher.seal(0, data, segment_aad(identity(v), 1, 0, True))
        return PartLayout(number=1, size=len(data), etag="", stripe_id=b"", k=0, m=0,
                          segment_size=self._cfg.segment_size, nodes=[], inline=sealed)

    async def write_part(self, v: ObjectVersion, number: int, cipher: SegmentCipher | None,
                         body: AsyncIterator[bytes], digests: Sequence[object],
                         size_hint: int | None, storage_class: str,
                         compress: bool = False, segment_size: int | None = None,
                         ) -> PartLayout:
        """Write one part as one stripe; it becomes visible only when a manifest commits.

        With `compress` and a compressing profile (archive), the plaintext is zstd-compressed
        before encryption and the layout says so (`compressed`, `plain_size`). With no
        `cipher`, `body` is the part's sealed segments (`read_sealed`), re-coded as they are.
        """
        profile = self._cfg.profile_for_class(storage_class)
        segment_size = segment_size or self._cfg.segment_for(size_hint)
        counter = None
        if compress and profile.compress and cipher is not None:
            from storage.compression import Counter, compress_stream

            counter = Counter()
            body = compress_stream(body, digests, counter)
            digests, size_hint = (), None
        stripe_id = new_stripe_id()
        codec = StripeCodec(cipher=cipher, codec=ErasureCodec(profile.k, profile.m),
                            identity=identity(v), part=number, stripe_id=stripe_id,
                            segment_size=segment_size)
        # No metadata write before the data: shards of a write that never commits have no
        # X/ entry, and the orphan sweep collects them after a grace period.
        res = await self._stripes.write(codec, profile, body, digests, size_hint)
        part = PartLayout(number=number, size=res.size, etag="", stripe_id=stripe_id,
                          k=profile.k, m=profile.m, segment_size=segment_size,
                          nodes=res.nodes, profile=profile.name)
        if counter is not None:
            part.compressed, part.plain_size = True, counter.plain
        return part

    def index_part(self, puts: dict[bytes, bytes], part: PartLayout, entry: dict[str, Any],
                   compares: dict[bytes, int] | None) -> None:
        """Add to `puts` (the transaction that commits `part`) its stripe index entry and, when
        the write left the stripe degraded, its repair queue entry (a shard missing: the
        urgent queue, read first; only not zone-safe: the queue): repair never meets an entry whose stripe is not indexed yet, and a write
        that never commits queues nothing (its shards are orphans the sweep collects).
        `compares` (None only when the stripe was indexed before: a multipart completion)
        gets the stripe's discard tombstone compared absent (`discard_parts`) and the
        membership epoch (`commit_nodes.guard`: NodeRemoved for a named node removed since
        the write placed it; after a failed commit, `recheck_nodes`)."""
        puts[stripe_index_key(part.stripe_id)] = pack(entry)
        if compares is not None:
            compares[discarded_key(part.stripe_id)] = 0
            commit_nodes.guard(self._stripes.health, part.nodes, compares)
        queue = self._stripes.spares.repair_entry(part.stripe_id, part.nodes, part.m) if part.size else None
        if queue is not None:
            puts[queue] = pack({"bucket": entry["bucket"], "key": entry["key"], "reason": "write"})

    async def recheck_nodes(self, compares: dict[bytes, int]) -> None:
        """After a failed commit whose `compares` `index_part` filled: the map re-read when
        the membership epoch moved (a removal); the next attempt's guard then refuses a
        named node removed meanwhile (NodeRemoved)."""
        await commit_nodes.recheck(self._meta, self._cfg, self._stripes.health, compares)

    async def commit(self, v: ObjectVersion, b: Bucket,
                     conditions: WriteConditions | None = None, extra: Txn | None = None,
                     tenant_rev: int = 0, age: WriteAge | None = None,
                     fresh: bool = True, writer: str | None = None) -> None:
        """Atomically make `v` current in bucket `b`, retiring what it replaces
        (compare-and-swap loop).

        The transaction compares `b`'s revision (`BucketService.guard`): if the bucket was
        deleted or reconfigured (versioning) since `b` was read, the commit is redone under
        its new state, so `b` needs no read here when nothing changed. `tenant_rev` (the
        tenant record's revision `v`'s KEK was read at, 0 = none) is compared the same way.
        The key's current record is not read first: the first attempt assumes the key is
        new (unless If-Match needs the record), and a failed attempt returns the key's,
        the bucket's and the tenant's records in the same round trip for the next. So a new
        key commits in one round trip, an overwrite in two. `conditions` (If-Match /
        If-None-Match) are checked against the record the transaction compares, so they
        hold atomically. `extra` is applied in the same transaction (a multipart upload's
        records); if one of its compared records changed, `StaleRecord` is raised instead
        of retrying. `age` (a write's first shard) raises WriteExpired before any attempt
        made after the orphan grace: the sweep may have deleted those shards. `fresh`: `v`'s
        stripes were written for this commit (False: a multipart completion's parts,
        indexed by their own commits); each one's discard tombstone is compared absent, so
        a commit applied after `discard_parts` ran (late, on etcd) fails instead of
        listing a version whose shards the collector deleted. `writer` (the signing tenant,
        when not `v`'s): its record is compared too, first at the revision its request's
        auth check cached, and must be "active" (`TenantService.writer_revision`): a write
        under a grant authenticated before the writer's delete mark cannot commit after it.
        """
        from storage.errors import BucketChanged, StaleRecord

        okey = object_key(v.bucket, v.key)
        bkey, tkey = bucket_key(v.bucket), tenant_key(v.tenant)
        reads = (okey, bkey, tkey) if tenant_rev else (okey, bkey)
        wkey = tenant_key(writer) if writer is not None and writer != v.tenant else None
        writer_rev = await self._tenants.writer_revision(writer) if writer and wkey else 0
        reads += (wkey,) if wkey else ()
        cur = (await self._meta.get(okey)
               if conditions is not None and conditions.if_match is not None else None)
        stored, bodies = inline_bodies.apart(self._meta, v)  # (etcd: bodies under own keys)
        while True:
            cur_v = ObjectVersion.decode(cur.value) if cur else None
            if conditions is not None:
                conditions.check(v.bucket, v.key, cur_v)
            puts = {okey: stored.encode(), **bodies}
            deletes: list[bytes] = []
            compares = {okey: cur.revision if cur else 0}
            self.buckets.guard(b, compares)
            if tenant_rev:
                compares[tkey] = tenant_rev
            if wkey:
                compares[wkey] = writer_rev
            retired: list[ObjectVersion] = []
            if b.versioning:
                newest = await self._replace_null(v, cur_v, v.version_id == NULL_VERSION, puts,
                                                  deletes, compares, retired)
                puts[version_key(v.bucket, v.key, commit_sort(v.version_id, newest))] = (
                    puts[okey])
            elif cur_v is not None:
                retired.append(cur_v)
            if retired:  # a write never replaces a locked (null) version
                await object_lock.judged(partial(_check_retired, retired),
                                         self.lock_clock.now)
            indexed = 0
            for p in v.parts if fresh or len(v.parts) <= retiring.INLINE_PARTS else ():
                # (a many-part completion's parts keep their "part" entries: `retiring`)
                if p.stripe_id:
                    indexed += 1
                    self.index_part(puts, p, {"state": "live", "bucket": v.bucket, "key": v.key,
                                              "version": v.version_id, "part": p.number},
                                    compares if fresh else None)
            markers = self._retire(retired, puts, deletes, indexed)
            if extra is not None:
                compares.update(extra.compares)
                puts.update(extra.puts)
                deletes.extend(extra.deletes)
            if age is not None:
                age.check()
            die_at("before-commit", v.key)  # (a test hook; nothing without its variable)
            members = commit_nodes.guarded(compares)
            with STAGES.time("metadata_commit"):
                done, seen = await self._meta.txn_or_read(
                    Txn(compares=compares, puts=puts, deletes=tuple(deletes)),
                    reads + tuple(members))
            if done:
                die_at("after-commit", v.key)
                await retiring.finish_now(self._meta, markers)
                return
            if any((seen[k].revision if seen[k] else 0) != rev for k, rev in members.items()):
                await self.recheck_nodes(members)  # (a removal applied meanwhile)
            if extra is not None:
                for k, rev in extra.compares.items():
                    item = await self._meta.get(k)
                    if (item.revision if item else 0) != rev:
                        raise StaleRecord(f"record {k!r} changed")
            cur = seen[okey]
            if b.cached and (seen[bkey] is None or seen[bkey].revision != b.revision):
                raise BucketChanged(v.bucket)  # decided on a stale cached record: rerun
            b = self.buckets.from_item(v.tenant, v.bucket, seen[bkey])  # it may have changed
            if tenant_rev:
                tenant_rev = self._tenants.revalidate(v.tenant, v.kek_version, seen[tkey])
            if writer and wkey:
                writer_rev = self._tenants.writer_check(writer, seen[wkey])

    async def _replace_null(self, v: ObjectVersion, cur_v: ObjectVersion | None, replace: bool,
                            puts: dict[bytes, bytes], deletes: list[bytes],
                            compares: dict[bytes, int], retired: list[ObjectVersion]) -> int:
        """In a versioned bucket: retire the null version if `replace`, else keep it listed.
        Returns the time (ns) the key's newest version is listed at (0: none), which the new
        version must be listed after (`commit_sort`).

        An object written before versioning was enabled has only its current record; it
        becomes the "null" version and must not vanish when a newer version is written.
        """
        in_history = False
        newest = 0
        for item in await self._versions_raw(v.bucket, v.key):
            newest = newest or sorted_at(unpack(item.key)[-1])  # (newest first)
            old = ObjectVersion.decode(item.value)
            if old.version_id == NULL_VERSION:
                in_history = True
                if replace:
                    deletes.append(item.key)
                    compares[item.key] = item.revision
                    retired.append(old)
        if cur_v is not None and cur_v.version_id == NULL_VERSION and not in_history:
            if replace:
                retired.append(cur_v)
            else:
                ts = int(cur_v.last_modified * 1e9)
                puts[version_key(v.bucket, v.key, version_sort(ts, NULL_VERSION))] = cur_v.encode()
                newest = max(newest, ts)
        return newest

    def _retire(self, versions: list[ObjectVersion], puts: dict[bytes, bytes],
                deletes: list[bytes], indexed: int = 0) -> list[bytes]:
        """Retire replaced versions for good (`version_retire`): their stripes collected after
        a grace period, an archived version's restore job dropped and its restored copy
        handed to the restore-expiry queue as due then too, as on S3, where deleting the
        object deletes the copy (2 ops per version, whatever its part count). Returns the
        retirement markers of many-part versions, for `retiring.finish_now` once the
        transaction applied (each costs the transaction 1 op, not 2 per part).

        The parts retired inline share `retiring.INLINE_PARTS` with the `indexed` parts
        the transaction indexes (a <=40-part completion over a 40-part version was ~165
        ops, over etcd's default 128): a version past what is left goes by marker."""
        due = time.time_ns() + int(self.gc_grace_s * 1e9)
        budget = retiring.INLINE_PARTS - indexed
        markers = []
        for old in versions:
            markers.append(retire_version(old, due, puts, deletes, max(budget, 0)))
            if markers[-1] is None:
                budget -= len(old.parts)
        return [m for m in markers if m is not None]

    async def discard_parts(self, parts: list[PartLayout], after_s: float = 0.0) -> None:
        """Queue the stripes of a write whose commit failed for collection now; when the
        metadata store is full (so the commit was refused too, and no record names them),
        delete their shards from the nodes at once instead: no queue entry can be written,
        and the orphan sweep would leave them on the nodes for its grace period.

        A failed commit may have applied all the same (a timeout or a broken connection
        after sending, a cancellation while the store's commit went on), or may still
        apply (an etcd proposal a member forwards late). So each stripe is discarded only
        if it has no index entry (compared absent: an applied commit's stripes are its
        version's), and with a tombstone (`XD`) that every commit indexing the stripe
        compares absent: a late commit then fails. The tombstone outlives the orphan grace
        (no write older than that commits, `WriteAge`); the collector drops it then.

        The shards go `after_s` from now: 0 when the commit surely did not apply; the GC
        grace when it may have applied and its version been removed since (retirement
        deleted the index entries, so the compare above cannot tell): reads of that version
        in flight keep the grace retirement gave them.

        It runs outside any worker step's fence (`fence.outside_step`): a stale worker's
        write (its commit refused for the lease) still queues its stripes, and these
        compare-and-swaps need no lease (no commit names the stripes, or they stay). It is
        shielded from the caller's cancellation (`fence.cleanup_outside_step`)."""
        await cleanup_outside_step(self._discard(parts, after_s))

    async def _discard(self, parts: list[PartLayout], after_s: float) -> None:
        from storage.errors import StorageFull

        now = time.time_ns()
        until = now + int(self._cfg.repair.orphan_grace_s * 1e9)
        due = now + int(after_s * 1e9)
        each = [Txn(compares={stripe_index_key(p.stripe_id): 0},
                    puts=retiring.discard_puts(p.stripe_id, p.nodes, due, until))
                for p in parts if p.stripe_id]
        if not each:
            return
        try:
            # in groups of STEP_PARTS (3 ops a stripe): etcd refuses a txn over --max-txn-ops
            for at in range(0, len(each), retiring.STEP_PARTS):
                group = each[at:at + retiring.STEP_PARTS]
                whole = Txn(compares={k: 0 for t in group for k in t.compares},
                            puts={k: v for t in group for k, v in t.puts.items()})
                if not await self._meta.txn(whole) and len(group) > 1:
                    for t in group:  # a stripe indexed (its commit applied) is left as it is
                        await self._meta.txn(t)
        except StorageFull:
            for p in parts:
                # a stripe with an index entry is named by a commit that applied although
                # it raised (a timeout, a cancellation): the GC queue's rule, left to it
                if p.stripe_id and await self._meta.get(stripe_index_key(p.stripe_id)) is None:
                    await self._stripes.delete(p.stripe_id, p.nodes)  # (a node not reached
                    # keeps its shard for the orphan sweep)
            raise


async def _check_retired(retired: list[ObjectVersion], now: float | None) -> None:
    """Refuse (ObjectLocked) a write that would remove a locked version for good."""
    for gone in retired:
        object_lock.check_delete(gone.lock, False, now)
