"""Objects: versions, manifests and their atomic commit, over stripes of encrypted shards.

A PUT streams the data to the nodes, then commits the manifest with one compare-and-swap
transaction that also indexes its stripes (X/) and retires the version it replaces; shards
of a PUT that never commits have no X/ entry and are collected by the orphan sweep. Reads use only
the manifest: placement is never recomputed on the read path.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage import inline_bodies, object_lock
from storage.buckets import BucketService
from storage.conditions import DeleteConditions, WriteConditions
from storage.config import Config
from storage.crypto import keys
from storage.crypto.aead import SegmentCipher
from storage.crypto.keys import segment_aad
from storage.datakeys import DataKeys, etag_for, identity
from storage.erasure import ErasureCodec
from storage.errors import InvalidRange, ObjectNotFound
from storage.keyspace import (
    bucket_key,
    gc_key,
    object_key,
    repair_key,
    span,
    stripe_index_key,
    tenant_key,
    urgent_repair_key,
    version_key,
    version_prefix,
)
from storage.kms import KmsService
from storage.listing import NULL_VERSION, Listing
from storage.metadata import MetadataStore, Txn
from storage.pipeline import StripeCodec
from storage.placement import zone_safe
from storage.records import Bucket, ObjectVersion, PartLayout, pack
from storage.shards.ids import new_stripe_id
from storage.stripes import StripeStore
from storage.telemetry import STAGES
from storage.tenants import TenantService

Finalizer = Callable[[ObjectVersion], Awaitable[None]]


def new_version_id() -> str:
    return secrets.token_urlsafe(24)


def version_sort(ts_ns: int, version_id: str) -> str:
    """Sort key putting the newest version first."""
    return f"{(1 << 64) - ts_ns:020d}.{version_id}"


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


@dataclass
class DeleteResult:
    version_id: str | None
    delete_marker: bool


class ObjectService:
    def __init__(self, cfg: Config, meta: MetadataStore, tenants: TenantService,
                 buckets: BucketService, stripes: StripeStore, gc_grace_s: float = 60.0) -> None:
        self._cfg = cfg
        self._meta = meta
        self._tenants = tenants
        self.buckets = buckets
        self._stripes = stripes
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
                          lock=object_lock.initial(b.config, dict(opts.lock), time.time()))
        dek = keys.new_dek()
        kms_wrapping = await self.data_keys.kms_wrapping_for(v)
        self.data_keys.seal_dek(v, kek, dek, opts.sse_c_key, kms_wrapping)
        md5 = hashlib.md5()
        cipher = SegmentCipher(dek)
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
            await self.commit(v, b, opts.conditions, tenant_rev=tenant_rev)
        except BaseException:
            await self.discard_parts(v.parts)
            raise
        return v

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
                   ) -> None:
        """Add to `puts` (the transaction that commits `part`) its stripe index entry and, when
        the write left the stripe degraded (a shard missing, or not zone-safe), its repair
        queue entry: repair never meets an entry whose stripe is not indexed yet, and a write
        that never commits queues nothing (its shards are orphans the sweep collects)."""
        puts[stripe_index_key(part.stripe_id)] = pack(entry)
        if part.size and (None in part.nodes
                          or not zone_safe(part.nodes, self._stripes.cluster_nodes(), part.m)):
            puts[repair_key(part.stripe_id)] = pack(
                {"bucket": entry["bucket"], "key": entry["key"], "reason": "write"})

    async def commit(self, v: ObjectVersion, b: Bucket,
                     conditions: WriteConditions | None = None, extra: Txn | None = None,
                     tenant_rev: int = 0) -> None:
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
        of retrying.
        """
        from storage.errors import BucketChanged, StaleRecord

        okey = object_key(v.bucket, v.key)
        bkey, tkey = bucket_key(v.bucket), tenant_key(v.tenant)
        reads = (okey, bkey, tkey) if tenant_rev else (okey, bkey)
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
            retired: list[ObjectVersion] = []
            if b.versioning:
                vsort = version_sort(time.time_ns(), v.version_id)
                puts[version_key(v.bucket, v.key, vsort)] = puts[okey]
                await self._replace_null(v, cur_v, v.version_id == NULL_VERSION, puts, deletes,
                                         compares, retired)
            elif cur_v is not None:
                retired.append(cur_v)
            for p in v.parts:
                if p.stripe_id:
                    self.index_part(puts, p, {"state": "live", "bucket": v.bucket, "key": v.key,
                                              "version": v.version_id, "part": p.number})
            self._retire(retired, puts, deletes)
            if extra is not None:
                compares.update(extra.compares)
                puts.update(extra.puts)
                deletes.extend(extra.deletes)
            with STAGES.time("metadata_commit"):
                done, seen = await self._meta.txn_or_read(
                    Txn(compares=compares, puts=puts, deletes=tuple(deletes)), reads)
            if done:
                return
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

    async def _replace_null(self, v: ObjectVersion, cur_v: ObjectVersion | None, replace: bool,
                            puts: dict[bytes, bytes], deletes: list[bytes],
                            compares: dict[bytes, int], retired: list[ObjectVersion]) -> None:
        """In a versioned bucket: retire the null version if `replace`, else keep it listed.

        An object written before versioning was enabled has only its current record; it
        becomes the "null" version and must not vanish when a newer version is written.
        """
        in_history = False
        for item in await self._versions_raw(v.bucket, v.key):
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

    def _retire(self, versions: list[ObjectVersion], puts: dict[bytes, bytes],
                deletes: list[bytes]) -> None:
        """Queue the stripes of replaced versions for collection after a grace period (and
        delete their inline bodies kept apart: no reader needs them once the record is gone)."""
        due = time.time_ns() + int(self.gc_grace_s * 1e9)
        for old in versions:
            inline_bodies.retire(old, deletes)
            for p in old.parts:
                if p.stripe_id and p.nodes:
                    puts[gc_key(due, p.stripe_id)] = pack({"nodes": p.nodes})
                    deletes.append(stripe_index_key(p.stripe_id))

    async def discard_parts(self, parts: list[PartLayout]) -> None:
        """Queue the stripes of an uncommitted write for collection now."""
        puts: dict[bytes, bytes] = {}
        deletes: list[bytes] = []
        now = time.time_ns()
        for p in parts:
            if p.stripe_id:
                puts[gc_key(now, p.stripe_id)] = pack({"nodes": p.nodes})
                deletes.append(stripe_index_key(p.stripe_id))
        if puts:
            await self._meta.txn(Txn(puts=puts, deletes=tuple(deletes)))

    # read ----------------------------------------------------------------------------------

    async def _versions_raw(self, bucket: str, key: str) -> list:
        return await self._meta.range(*span(version_prefix(bucket, key)), limit=100000)

    async def head(self, b: Bucket, key: str, version_id: str | None = None,
                   ) -> ObjectVersion:
        """The current (or named) version in bucket `b`; a delete marker is returned, not
        raised."""
        bucket = b.name
        if version_id is None:
            _, current = await inline_bodies.read_current(self._meta, bucket, key)
            if current is None:
                raise ObjectNotFound(bucket, key)
            return current
        cur = await self._meta.get(object_key(bucket, key))
        if cur is not None:
            cv = ObjectVersion.decode(cur.value)
            if cv.version_id == version_id:
                return await inline_bodies.resolve(self._meta, cv)
        for item in await self._versions_raw(bucket, key):
            v = ObjectVersion.decode(item.value)
            if v.version_id == version_id:
                return await inline_bodies.resolve(self._meta, v)
        raise ObjectNotFound(bucket, key, version_id)

    async def read(self, v: ObjectVersion, start: int = 0, end: int | None = None,
                   on_damage: Callable[[bytes, int, str], None] | None = None,
                   sse_c_key: bytes | None = None, borrowed: bool = False,
                   ) -> AsyncIterator[bytes | memoryview]:
        """Plaintext bytes [start, end) of a version, streamed segment by segment.

        `borrowed` (`StripeStore.read`): chunks may be views of reused buffers, valid only
        until the next one is asked for; the consumer copies what it keeps."""
        end = v.size if end is None else end
        if start < 0 or end > v.size or start > end:
            raise InvalidRange(v.size)
        if start == end:
            return
        if inline_bodies.unresolved(v):
            await inline_bodies.resolve(self._meta, v)
        cipher = await self.data_keys.cipher_for(v, sse_c_key)
        offset = 0
        for part in v.parts:
            p_start, p_end = offset, offset + part.plaintext_size
            offset = p_end
            if p_end <= start or p_start >= end or part.size == 0:
                continue
            lo, hi = max(start, p_start) - p_start, min(end, p_end) - p_start
            if part.inline:
                aad = segment_aad(identity(v), part.number, 0, True)
                yield cipher.open(0, part.inline, aad)[lo:hi]
                continue
            codec = self.codec_for(v, part, cipher)
            if part.compressed:
                async with contextlib.aclosing(
                        self._read_compressed(codec, part, lo, hi, on_damage)) as pieces:
                    async for piece in pieces:
                        yield piece
                continue
            first, last = lo // part.segment_size, (hi - 1) // part.segment_size
            seg = first
            async with contextlib.aclosing(self._stripes.read(
                    codec, part.nodes, part.size, first, last,
                    on_damage or self._report_damage, borrowed)) as plains:
                async for plain in plains:
                    seg_start = seg * part.segment_size
                    a = max(lo - seg_start, 0)
                    b = min(hi - seg_start, len(plain))
                    yield plain[a:b] if (a, b) != (0, len(plain)) else plain
                    seg += 1

    async def read_sealed(self, v: ObjectVersion, part: PartLayout) -> AsyncIterator[bytes]:
        """One part's segments as stored, still sealed: needs no key (re-coding SSE-C data).

        Each block is checked against its frame checksum; the GCM tags are checked when
        the data is next opened with the key.
        """
        if part.body_ref and not part.inline:
            await inline_bodies.resolve(self._meta, v)
        if part.inline:
            yield part.inline
            return
        if part.size == 0:
            return
        from storage.pipeline import segment_count

        last = segment_count(part.size, part.segment_size) - 1
        async for sealed in self._stripes.read(self.codec_for(v, part, None), part.nodes,
                                               part.size, 0, last, self._report_damage):
            yield sealed

    async def _read_compressed(self, codec: StripeCodec, part: PartLayout, lo: int, hi: int,
                               on_damage: Callable[[bytes, int, str], None] | None,
                               ) -> AsyncIterator[bytes]:
        """Plaintext [lo, hi) of a compressed part: decompressed from its start (archive)."""
        from storage.compression import decompress_stream
        from storage.pipeline import segment_count

        last = segment_count(part.size, part.segment_size) - 1
        stored = self._stripes.read(codec, part.nodes, part.size, 0, last,
                                    on_damage or self._report_damage)
        pos = 0
        plains = decompress_stream(stored)
        try:
            async for plain in plains:
                a, b = max(lo - pos, 0), min(hi - pos, len(plain))
                pos += len(plain)
                if a < b:
                    yield plain[a:b] if (a, b) != (0, len(plain)) else plain
                if pos >= hi:
                    break
        finally:
            await plains.aclose()
            await stored.aclose()  # type: ignore[attr-defined]

    def _report_damage(self, stripe_id: bytes, index: int, reason: str) -> None:
        import asyncio

        asyncio.get_running_loop().create_task(self._meta.put(  # one shard fewer: urgent
            urgent_repair_key(stripe_id), pack({"index": index, "reason": reason[:200]})))

    # delete --------------------------------------------------------------------------------

    async def delete(self, b: Bucket, key: str, version_id: str | None = None,
                     conditions: DeleteConditions | None = None,
                     protect: Callable[[ObjectVersion], None] | None = None,
                     ) -> DeleteResult:
        """Delete the current object (a delete marker when versioned) or one version.

        `conditions` are checked against the target (the current record, or the named
        version) inside the compare-and-swap loop; a missing target is a no-op. `protect`
        is called with a version about to be removed for good and may raise (Object Lock).
        Like `commit`, the transaction compares `b`'s revision and re-reads it on conflict.
        """
        tenant, bucket = b.tenant, b.name
        okey = object_key(bucket, key)
        cond = conditions or DeleteConditions()
        while True:
            cur = await self._meta.get(okey)
            cur_v = ObjectVersion.decode(cur.value) if cur else None
            compares = {okey: cur.revision if cur else 0}
            puts: dict[bytes, bytes] = {}
            deletes: list[bytes] = []
            retired: list[ObjectVersion] = []
            result = DeleteResult(version_id=None, delete_marker=False)
            if not b.versioning:
                if cur_v is None or not cond.applies(cur_v):
                    return result
                if protect is not None:
                    protect(cur_v)
                deletes.append(okey)
                retired.append(cur_v)
            elif version_id is None:
                if not cond.applies(cur_v):
                    return result
                marker_id = new_version_id() if b.versioning == "Enabled" else NULL_VERSION
                marker = ObjectVersion(bucket=bucket, key=key, version_id=marker_id,
                                       tenant=tenant, size=0, etag="",
                                       last_modified=time.time(), delete_marker=True)
                await self._replace_null(marker, cur_v, marker_id == NULL_VERSION, puts,
                                         deletes, compares, retired)
                if protect is not None:
                    for r in retired:
                        protect(r)
                puts[okey] = marker.encode()
                puts[version_key(bucket, key, version_sort(time.time_ns(), marker_id))] = (
                    marker.encode())
                result = DeleteResult(version_id=marker_id, delete_marker=True)
            else:
                items = await self._versions_raw(bucket, key)
                target = None
                rest = []
                for item in items:
                    ver = ObjectVersion.decode(item.value)
                    if ver.version_id == version_id and target is None:
                        target = (item, ver)
                    else:
                        rest.append((item, ver))
                gone = DeleteResult(version_id=version_id, delete_marker=False)
                if target is None:
                    if cur_v is not None and cur_v.version_id == version_id:
                        if not cond.applies(cur_v):
                            return gone
                        if protect is not None:
                            protect(cur_v)
                        deletes.append(okey)
                        retired.append(cur_v)
                    else:
                        return gone
                else:
                    item, ver = target
                    if not cond.applies(ver):
                        return gone
                    if protect is not None:
                        protect(ver)
                    deletes.append(item.key)
                    compares[item.key] = item.revision
                    retired.append(ver)
                    result = DeleteResult(version_id=version_id, delete_marker=ver.delete_marker)
                    if cur_v is not None and cur_v.version_id == version_id:
                        if rest:
                            compares[rest[0][0].key] = rest[0][0].revision
                            puts[okey] = rest[0][1].encode()
                        else:
                            deletes.append(okey)
            self._retire([r for r in retired if not r.delete_marker], puts, deletes)
            self.buckets.guard(b, compares)
            if await self._meta.txn(Txn(compares=compares, puts=puts, deletes=tuple(deletes))):
                return result
            b = await self.buckets.get(tenant, bucket)  # it may be what changed

    async def is_latest(self, v: ObjectVersion) -> bool:
        cur = await self._meta.get(object_key(v.bucket, v.key))
        return cur is not None and ObjectVersion.decode(cur.value).version_id == v.version_id

    async def update_version(self, b: Bucket, key: str, version_id: str | None,
                             guard: Callable[[ObjectVersion], None] | None = None,
                             **changes: object) -> ObjectVersion:
        """Change metadata fields (tags...) of one version of bucket `b`, current one if
        `version_id` is None, in every record that holds it (current and history), with
        compare-and-swap. `guard` sees the version as read in the same loop and may refuse
        (Object Lock)."""
        bucket = b.name
        okey = object_key(bucket, key)
        while True:
            records = []
            cur = await self._meta.get(okey)
            if cur is not None:
                cv = ObjectVersion.decode(cur.value)
                if version_id is None or cv.version_id == version_id:
                    records.append((cur, cv))
                    version_id = cv.version_id
            if version_id is None:
                raise ObjectNotFound(bucket, key)
            for item in await self._versions_raw(bucket, key):
                v = ObjectVersion.decode(item.value)
                if v.version_id == version_id:
                    records.append((item, v))
            if not records:
                raise ObjectNotFound(bucket, key, version_id)
            updated = records[0][1]
            if updated.delete_marker:
                return updated
            if guard is not None:
                guard(updated)
            compares, puts = {}, {}
            for item, v in records:
                for name, value in changes.items():
                    setattr(v, name, value)
                compares[item.key] = item.revision
                puts[item.key] = v.encode()
            if await self._meta.txn(Txn(compares=compares, puts=puts)):
                return updated
