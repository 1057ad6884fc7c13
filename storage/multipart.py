"""Multipart uploads: parts stored one stripe each under the upload's own data key, then
completed into one object version whose manifest references the part stripes directly.

Records (`storage.multipart_records`): `Upload` under (U, bucket, key, upload id), `Part`
under (P, upload id, part:05d).

Every change to an upload's parts rewrites its `Upload` record in the same transaction, so
the record's revision fences Complete and Abort against concurrent part uploads: Complete
commits only if no part changed since it read them, and a part committed after Complete or
Abort fails its compare and is discarded. The DEK is generated at Create; each part is
sealed with the part number as the AAD part index, so Complete never re-encodes data.

Checksums (COMPOSITE and FULL_OBJECT): `storage.multipart_checksums`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from storage import object_lock, retiring
from storage.conditions import WriteConditions
from storage.crypto import keys
from storage.crypto.md5 import md5 as new_md5
from storage.datakeys import etag_for, etag_hides_md5
from storage.errors import InvalidInput, NotFound, Overloaded, StaleRecord
from storage.keyspace import (
    gc_key,
    next_key,
    object_key,
    part_key,
    part_prefix,
    past_text,
    span,
    stripe_index_key,
    text_span,
    unpack,
    upload_key,
    upload_prefix,
)
from storage.metadata import MetadataStore, Txn
from storage.multipart_checksums import (
    COMPOSITE,
    DEFAULT_ALGORITHM,
    FULL_OBJECT,
    Combiner,
    checksum_type_for,
    stored_type,
)
from storage.multipart_records import ListedPart, Part, Upload, UploadOptions
from storage.objects import NULL_VERSION, ObjectService, new_version_id
from storage.records import Bucket, ObjectVersion, pack
from storage.tenants import TenantService
from storage.write_age import WriteAge

PART_NUMBER_MAX = 10000
MIN_PART_SIZE = 5 * 1024 * 1024
BATCH = 1000
# Reads of the parts one completion makes before it answers 503 SlowDown (SDKs retry it
# with backoff): each repair or rebalance move of a part's shard rewrites the upload record,
# so during a drain of a large upload's nodes every read could be stale by its commit.
COMPLETE_TRIES = 8

PartFinalizer = Callable[[Part], Awaitable[None]]


class UploadNotFound(NotFound):
    def __init__(self, upload_id: str) -> None:
        super().__init__(f"no upload {upload_id!r}")
        self.upload_id = upload_id


class InvalidPart(InvalidInput):
    """A listed part was never uploaded, or its ETag or checksum does not match."""

    def __init__(self, number: int, etag: str) -> None:
        super().__init__(f"part {number} with etag {etag!r} not found")
        self.number = number
        self.etag = etag


class PartTooSmall(InvalidInput):
    """A part other than the last is under the 5 MiB minimum."""

    def __init__(self, number: int, size: int, etag: str) -> None:
        super().__init__(f"part {number} is {size} bytes")
        self.number = number
        self.size = size
        self.etag = etag


class ChecksumMismatch(InvalidInput):
    """The whole-object checksum the client sent at Complete does not match."""

    def __init__(self, algorithm: str) -> None:
        super().__init__(f"{algorithm} of the object does not match")
        self.algorithm = algorithm


class ChecksumTypeMismatch(InvalidInput):
    """The checksum type the client asserted at Complete (x-amz-checksum-type) is not the
    one the object gets: `have` (None: it gets no checksum, e.g. S3's default could not be
    formed because a part was stored before it). Refused (AWS: BadDigest), never ignored."""

    def __init__(self, have: str | None) -> None:
        super().__init__(f"the object's checksum type is {have or 'none'}")
        self.have = have


class SizeMismatch(InvalidInput):
    """The object size the client announced at Complete (x-amz-mp-object-size) is not the
    listed parts' total."""

    def __init__(self, announced: int, size: int) -> None:
        super().__init__(f"announced {announced} bytes, the parts hold {size}")
        self.announced = announced
        self.size = size


def _mismatched(have: dict[str, str], expected: dict[str, str]) -> str | None:
    """The first algorithm whose whole-object checksum the client sent (`expected`) is not
    the object's (`have`), compared without the composite's "-N"; None if all match."""
    for alg, sent in expected.items():
        if have.get(alg) is None or have[alg].split("-")[0] != sent.split("-")[0]:
            return alg
    return None


def _describes(v: ObjectVersion, listed: Sequence[ListedPart], expected: dict[str, str],
               expected_size: int | None, expected_type: str | None = None) -> bool:
    """Whether completing with `listed` (and the whole-object checksums, checksum type and
    size the client announced) would have made exactly `v`: the same parts with the same
    ETags and checksums, so the same multipart ETag (`_assemble`'s arithmetic), checksums,
    checksum type and size."""
    if len(v.parts) != len(listed) or (expected_size is not None and expected_size != v.size):
        return False
    if expected_type is not None and expected_type != stored_type(v.checksums,
                                                                  v.checksum_type):
        return False
    for want, part in zip(listed, v.parts, strict=True):
        if want.number != part.number or not _is_part(want, part.etag, part.checksums):
            return False
    return (v.etag == _multipart_etag([p.etag for p in v.parts])
            and _mismatched(v.checksums, expected) is None)


def _is_part(want: ListedPart, etag: str, checksums: dict[str, str]) -> bool:
    """Whether a listed part names the stored part (`etag`, `checksums`) exactly."""
    return want.etag == etag and all(checksums.get(a) == c for a, c in want.checksums.items())


def _multipart_etag(etags: Sequence[str]) -> str:
    """S3's multipart ETag: the MD5 of the parts' MD5s, then "-" and the part count."""
    return f"{new_md5(b''.join(bytes.fromhex(e) for e in etags)).hexdigest()}-{len(etags)}"


def new_upload_id() -> str:
    """Sortable by initiation time (listing order), then random."""
    return f"{time.time_ns():016x}" + secrets.token_urlsafe(32)


class MultipartService:
    """Create, upload parts to, list, complete and abort multipart uploads."""

    def __init__(self, meta: MetadataStore, tenants: TenantService, objects: ObjectService,
                 gc_grace_s: float = 60.0) -> None:
        self._meta = meta
        self._tenants = tenants
        self._objects = objects
        self._gc_grace_s = gc_grace_s

    # create / lookup -----------------------------------------------------------------------

    async def create(self, b: Bucket, key: str, opts: UploadOptions) -> Upload:
        """Start an upload of `key` in bucket `b` (the record the caller read)."""
        tenant, bucket = b.tenant, b.name
        ctype = checksum_type_for(opts.checksum_algorithm, opts.checksum_type)
        kek_version, kek = await self._tenants.kek(tenant)
        up = Upload(bucket=bucket, key=key, upload_id=new_upload_id(), tenant=tenant,
                    initiated=time.time(), identity_version=new_version_id(), dek=b"",
                    kek_version=kek_version, content_type=opts.content_type,
                    user_meta=opts.user_meta, headers=opts.headers,
                    storage_class=opts.storage_class, tags=opts.tags, sse=opts.sse,
                    checksum_algorithm=opts.checksum_algorithm, checksum_type=ctype,
                    acl=opts.acl, lock=dict(opts.lock))
        shell = up.shell()
        self._objects.data_keys.seal_dek(shell, kek, keys.new_dek(), opts.sse_c_key,
                                         await self._objects.data_keys.kms_wrapping_for(shell))
        up.dek, up.sse = shell.dek, shell.sse
        ukey = upload_key(bucket, key, up.upload_id)
        while True:  # under the bucket's guard, as an object commit: never outlives the bucket
            compares = {ukey: 0}
            self._objects.buckets.guard(b, compares)
            if await self._meta.txn(Txn(compares=compares, puts={ukey: up.encode()})):
                return up
            b = await self._objects.buckets.get(tenant, bucket)  # changed (or deleted) meanwhile

    async def get(self, b: Bucket, key: str, upload_id: str) -> tuple[Upload, int]:
        """The upload record and its revision; UploadNotFound if absent."""
        item = await self._meta.get(upload_key(b.name, key, upload_id))
        if item is None:
            raise UploadNotFound(upload_id)
        up = Upload.decode(item.value)
        if up.tenant != b.tenant:
            raise UploadNotFound(upload_id)
        return up, item.revision

    # parts ---------------------------------------------------------------------------------

    async def upload_part(self, b: Bucket, key: str, upload_id: str, number: int, body: AsyncIterator[bytes], digests: Sequence[object],
                          size_hint: int | None, finalize: PartFinalizer | None = None,
                          sse_c_key: bytes | None = None) -> Part:
        """Store one part as one stripe; replacing a part number retires the old stripe.

        An SSE-C upload needs its customer key on every part (KeyUnavailable otherwise).
        """
        if not 1 <= number <= PART_NUMBER_MAX:
            raise InvalidInput("part number out of range")
        up, _ = await self.get(b, key, upload_id)
        shell = up.shell()
        cipher = await self._objects.data_keys.cipher_for(shell, sse_c_key)
        md5 = new_md5()
        age = self._objects.write_age()
        layout = await self._objects.write_part(shell, number, cipher, body,
                                                [md5, *digests], size_hint, up.storage_class,
                                                compress=True)
        part = Part.of(upload_id, layout, md5.hexdigest(), time.time())
        try:
            if finalize is not None:
                await finalize(part)  # Content-MD5 is checked there, against the real MD5
            if etag_hides_md5(up.sse):
                part.etag = etag_for(shell, part.etag, sse_c_key,
                                     await self._objects.data_keys.kms_wrapping_for(shell))
            await self._commit_part(up, part, age)
        except BaseException:
            await self._objects.discard_parts([part.layout()])
            raise
        return part

    async def _commit_part(self, up: Upload, part: Part, age: WriteAge) -> None:
        ukey = upload_key(up.bucket, up.key, up.upload_id)
        pkey = part_key(up.upload_id, part.number)
        while True:
            uitem = await self._meta.get(ukey)
            if uitem is None:
                raise UploadNotFound(up.upload_id)
            cur = Upload.decode(uitem.value)
            cur.changes += 1
            old = await self._meta.get(pkey)
            puts = {ukey: cur.encode(), pkey: part.encode()}
            compares = {ukey: uitem.revision, pkey: old.revision if old else 0}
            self._objects.index_part(puts, part.layout(), {
                "state": "part", "upload": up.upload_id, "bucket": up.bucket, "key": up.key,
                "part": part.number}, compares)
            deletes: list[bytes] = []
            if old is not None:
                self._retire_part(Part.decode(old.value), puts, deletes, self._gc_grace_s)
            age.check()  # its shards may have been swept as orphans: not committed
            if await self._meta.txn(Txn(compares=compares, puts=puts, deletes=tuple(deletes))):
                return
            await self._objects.recheck_nodes(compares)  # (a node removed meanwhile)

    @staticmethod
    def _retire_part(p: Part, puts: dict[bytes, bytes], deletes: list[bytes],
                     grace_s: float) -> None:
        if p.stripe_id and p.nodes:
            due = time.time_ns() + int(grace_s * 1e9)
            puts[gc_key(due, p.stripe_id)] = pack({"nodes": p.nodes})
        deletes.append(stripe_index_key(p.stripe_id))

    async def iter_parts(self, upload_id: str, after: int = 0) -> AsyncIterator[Part]:
        """Every part record in part-number order, read in batches (bounded memory)."""
        start, end = span(part_prefix(upload_id))
        if after:
            start = next_key(part_key(upload_id, after))
        while True:
            batch = await self._meta.range(start, end, limit=BATCH)
            for item in batch:
                yield Part.decode(item.value)
            if len(batch) < BATCH:
                return
            start = next_key(batch[-1].key)

    async def list_parts(self, b: Bucket, key: str, upload_id: str, marker: int = 0, max_parts: int = 1000,
                         ) -> tuple[Upload, list[Part], bool]:
        """One page of parts after `marker`: (upload, parts, truncated); a page of none
        (max-parts=0) is not truncated, as an empty listing page is not on S3."""
        up, _ = await self.get(b, key, upload_id)
        if max_parts == 0:
            return up, [], False
        start, end = span(part_prefix(upload_id))
        if marker:
            start = next_key(part_key(upload_id, marker))
        items = await self._meta.range(start, end, limit=max_parts + 1)
        parts = [Part.decode(i.value) for i in items[:max_parts]]
        return up, parts, len(items) > max_parts

    # complete / abort ----------------------------------------------------------------------

    async def complete(self, b: Bucket, key: str, upload_id: str, listed: Sequence[ListedPart],
                       conditions: WriteConditions | None = None,
                       expected: dict[str, str] | None = None,
                       expected_size: int | None = None,
                       expected_type: str | None = None,
                       writer: str | None = None) -> ObjectVersion:
        """Make the listed parts one object version; unlisted parts are retired. `writer`:
        the completing tenant when not the bucket's (`ObjectService.commit`).

        Raises InvalidPart, PartTooSmall, ChecksumMismatch, ChecksumTypeMismatch (the object
        would not get checksum type `expected_type`), SizeMismatch (the parts' total is
        not `expected_size`), UploadNotFound, Conflict when a conditional write's
        precondition does not hold, or Overloaded (503 SlowDown) when the upload's record
        changed under each of `COMPLETE_TRIES` attempts (its parts being moved meanwhile).
        """
        if not listed:
            raise InvalidInput("no parts")
        for _ in range(COMPLETE_TRIES):
            up, rev = await self.get(b, key, upload_id)
            try:
                v, extra, markers = await self._assemble(up, b, listed, expected or {},
                                                         expected_type)
            except InvalidInput:
                # Its parts are not read in one snapshot: a completion or abort (here or on
                # another gateway) that deletes them meanwhile is not the client's bad part.
                if await self._upload_revision(b, key, upload_id) != rev:
                    continue  # UploadNotFound now, or the answer on its new state
                raise
            if expected_size is not None and v.size != expected_size:
                raise SizeMismatch(expected_size, v.size)
            extra.compares[upload_key(b.name, key, upload_id)] = rev
            tenant_rev = await self._tenants.revision(b.tenant)  # no commit while shredding
            try:
                await self._objects.commit(v, b, conditions, extra=extra, tenant_rev=tenant_rev,
                                           fresh=False, writer=writer)
            except StaleRecord:
                continue  # a part changed meanwhile: read them again
            await retiring.finish_now(self._meta, markers)
            return v
        # Parts kept moving (repair, rebalance) faster than they could be read and committed:
        # nothing committed, the upload stays open; the client's retry comes after its backoff.
        raise Overloaded(f"upload {upload_id} changed under {COMPLETE_TRIES} completions")

    async def _upload_revision(self, b: Bucket, key: str, upload_id: str) -> int | None:
        """The upload record's revision now (None: completed or aborted)."""
        item = await self._meta.get(upload_key(b.name, key, upload_id))
        return None if item is None else item.revision

    async def finished(self, b: Bucket, key: str, upload_id: str,
                       listed: Sequence[ListedPart], expected: dict[str, str] | None = None,
                       expected_size: int | None = None,
                       expected_type: str | None = None) -> ObjectVersion | None:
        """The current version of `key` if upload `upload_id` made it and it is exactly the
        object this completion asks for (`_describes`): a repeated completion is answered
        200 with it. Else None: NoSuchUpload, S3's answer for a completed upload.

        Read past any cache: another process may have just completed the upload."""
        okey = object_key(b.name, key)
        items = await self._meta.range(okey, next_key(okey), limit=1)
        if not items or items[0].key != okey:
            return None
        v = ObjectVersion.decode(items[0].value)
        if v.upload_id != upload_id or v.delete_marker:
            return None
        return (v if _describes(v, listed, expected or {}, expected_size, expected_type)
                else None)

    async def _assemble(self, up: Upload, b: Bucket, listed: Sequence[ListedPart],
                        expected: dict[str, str], expected_type: str | None = None
                        ) -> tuple[ObjectVersion, Txn, list[bytes]]:
        """Merge the listed parts with the stored ones (both in part-number order): the
        version, what its commit also applies, and the retirement marker (`retiring`) of
        an upload of more than `retiring.INLINE_PARTS` parts, to finish once it applied."""
        version_id = new_version_id() if b.versioning == "Enabled" else NULL_VERSION
        v = up.shell(version_id)
        v.content_type, v.user_meta, v.headers = up.content_type, up.user_meta, up.headers
        v.storage_class, v.tags, v.sse, v.acl = up.storage_class, up.tags, up.sse, up.acl
        v.lock = await object_lock.initial(b.config, dict(up.lock), self._objects.lock_clock.floor)
        v.upload_id = up.upload_id
        puts: dict[bytes, bytes] = {}
        deletes: list[bytes] = [upload_key(up.bucket, up.key, up.upload_id)]
        combiner = (Combiner(up.checksum_algorithm, up.checksum_type or COMPOSITE)
                    if up.checksum_algorithm else None)
        # S3's default for an upload made without an algorithm: the parts' CRC64NVMEs
        # combined (FULL_OBJECT); none if a part has none (stored before this default)
        default = None if combiner is not None else Combiner(DEFAULT_ALGORITHM, FULL_OBJECT)
        idx = 0
        prev: Part | None = None
        records: list[bytes] = []  # every part record, deleted with the upload ...
        unlisted: list[Part] = []  # ... these parts' stripes retired
        async for p in self.iter_parts(up.upload_id):
            records.append(part_key(up.upload_id, p.number))
            if idx < len(listed) and listed[idx].number < p.number:
                raise InvalidPart(listed[idx].number, listed[idx].etag)
            if idx < len(listed) and listed[idx].number == p.number:
                want = listed[idx]
                idx += 1
                if not _is_part(want, p.etag, p.checksums):
                    raise InvalidPart(want.number, want.etag)
                if prev is not None and prev.size < MIN_PART_SIZE:
                    raise PartTooSmall(prev.number, prev.size, prev.etag)
                prev = p
                if combiner is not None:
                    value = p.checksums.get(combiner.algorithm)
                    if value is None:
                        raise InvalidPart(p.number, p.etag)
                    combiner.add(value, p.size)
                elif default is not None:
                    value = p.checksums.get(DEFAULT_ALGORITHM)
                    if value is None:
                        default = None
                    else:
                        default.add(value, p.size)
                v.parts.append(p.layout())
                v.size += p.size
            else:
                unlisted.append(p)
        if idx < len(listed):
            raise InvalidPart(listed[idx].number, listed[idx].etag)
        markers = []
        if len(records) > retiring.INLINE_PARTS:  # in bounded steps after the commit
            marker, value = retiring.upload_marker(up.bucket, up.key, up.upload_id,
                                                   [p.number for p in v.parts], time.time_ns())
            puts[marker] = value
            markers.append(marker)
        else:
            deletes.extend(records)
            for p in unlisted:
                self._retire_part(p, puts, deletes, 0.0)
        v.etag = _multipart_etag([p.etag for p in v.parts])
        if combiner is not None:
            v.checksums = {combiner.algorithm: combiner.value()}
            v.checksum_type = combiner.ctype
        elif default is not None and default.count:
            # its type left None (read as FULL_OBJECT): this tells S3's default from an
            # upload made with CRC64NVME (a repeated SSE-C completion asks for the key then)
            v.checksums = {DEFAULT_ALGORITHM: default.value()}
        wrong = _mismatched(v.checksums, expected)
        if wrong is not None:
            raise ChecksumMismatch(wrong)
        have = stored_type(v.checksums, v.checksum_type)
        if expected_type is not None and expected_type != have:
            raise ChecksumTypeMismatch(have)
        v.last_modified = time.time()
        return v, Txn(compares={}, puts=puts, deletes=tuple(deletes)), markers

    async def abort(self, b: Bucket, key: str, upload_id: str) -> None:
        """Delete the upload and retire every part's stripe (an upload of more than
        `retiring.INLINE_PARTS` parts: its record goes at once, its parts in bounded steps)."""
        while True:
            _, rev = await self.get(b, key, upload_id)
            ukey = upload_key(b.name, key, upload_id)
            puts: dict[bytes, bytes] = {}
            deletes: list[bytes] = [ukey]
            parts = await self._meta.range(*span(part_prefix(upload_id)),
                                           limit=retiring.INLINE_PARTS + 1)
            markers = []
            if len(parts) > retiring.INLINE_PARTS:
                marker, value = retiring.upload_marker(b.name, key, upload_id, [],
                                                       time.time_ns())
                puts[marker] = value
                markers.append(marker)
            else:
                for it in parts:
                    deletes.append(it.key)
                    self._retire_part(Part.decode(it.value), puts, deletes, 0.0)
            if await self._meta.txn(Txn(compares={ukey: rev}, puts=puts,
                                        deletes=tuple(deletes))):
                await retiring.finish_now(self._meta, markers)
                return

    async def abort_all(self, b: Bucket) -> int:
        """Abort every upload in progress in a bucket (DeleteBucket does, as S3 does)."""
        base = upload_prefix(b.name)
        aborted = 0
        while True:
            batch = await self._meta.range(*span(base), limit=BATCH)
            if not batch:
                return aborted
            for item in batch:
                up = Upload.decode(item.value)
                try:
                    await self.abort(b, up.key, up.upload_id)
                except UploadNotFound:
                    pass  # completed or aborted meanwhile
                aborted += 1

    # listing -------------------------------------------------------------------------------

    async def list_uploads(self, b: Bucket, prefix: str = "",
                           delimiter: str = "", key_marker: str = "",
                           upload_id_marker: str = "", max_uploads: int = 1000,
                           ) -> tuple[list[Upload], list[str], bool]:
        """One page of uploads in progress: (uploads, common prefixes, truncated); a page of
        none (max-uploads=0) is not truncated, as an empty listing page is not on S3."""
        tenant, bucket = b.tenant, b.name
        if max_uploads == 0:
            return [], [], False
        base = upload_prefix(bucket)
        start, end = text_span(base, prefix)
        if key_marker:
            if upload_id_marker:
                first = next_key(upload_key(bucket, key_marker, upload_id_marker))
            elif delimiter and key_marker.endswith(delimiter):
                first = past_text(base, key_marker)
            else:
                first = span(upload_prefix(bucket, key_marker))[1]
            start = max(start, first)
        uploads: list[Upload] = []
        prefixes: list[str] = []
        while True:
            batch = await self._meta.range(start, end, limit=BATCH)
            if not batch:
                return uploads, prefixes, False
            for item in batch:
                if len(uploads) + len(prefixes) >= max_uploads:
                    return uploads, prefixes, True
                if delimiter:
                    key = unpack(item.key)[2]
                    pos = key.find(delimiter, len(prefix))
                    if pos >= 0:
                        cp = key[: pos + len(delimiter)]
                        if cp > key_marker:  # S3 drops a prefix not past the key marker
                            prefixes.append(cp)
                        start = past_text(base, cp)
                        break
                up = Upload.decode(item.value)
                start = next_key(item.key)
                if up.tenant == tenant:
                    uploads.append(up)
            else:
                if len(batch) < BATCH:
                    return uploads, prefixes, False
