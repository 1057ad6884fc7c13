"""Deleting objects and editing a version's metadata (tags, retention...), compare-and-swap.

A base of `ObjectService` (storage/objects.py): deletes retire stripes the same way an
overwrite does (`_retire`), and a versioned delete writes a delete marker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from storage import inline_bodies, retiring
from storage.buckets import BucketService
from storage.conditions import DeleteConditions
from storage.errors import ObjectNotFound
from storage.keyspace import (
    object_key,
    span,
    tenant_key,
    version_key,
    version_left_key,
    version_prefix,
)
from storage.listing import NULL_VERSION
from storage.metadata import Item, MetadataStore, Txn
from storage.records import Bucket, ObjectVersion
from storage.tenants import TenantService
from storage.version_ids import commit_sort, new_version_id
from storage.version_places import left_record


@dataclass
class DeleteResult:
    version_id: str | None
    delete_marker: bool


async def version_records(meta: MetadataStore, bucket: str, key: str, version_id: str | None,
                          ) -> list[tuple[Item, ObjectVersion]]:
    """Every record holding one version of `key` (the current one if `version_id` is None):
    the current record first when it is that version, then its history record; [] when
    there is none. The one reader for edits of a version in place (tags, archive state)."""
    out = []
    cur = await meta.get(object_key(bucket, key))
    if cur is not None:
        cv = ObjectVersion.decode(cur.value)
        if version_id is None or cv.version_id == version_id:
            out.append((cur, cv))
            version_id = cv.version_id
    if version_id is None:
        return []
    for item in await meta.range(*span(version_prefix(bucket, key)), limit=100000):
        v = ObjectVersion.decode(item.value)
        if v.version_id == version_id:
            out.append((item, v))
    return out


class ObjectEdits:
    """DELETE and metadata edits of `ObjectService`."""

    _meta: MetadataStore
    _tenants: TenantService
    buckets: BucketService

    async def _versions_raw(self, bucket: str, key: str) -> list:
        raise NotImplementedError

    async def _replace_null(self, v: ObjectVersion, cur_v: ObjectVersion | None, replace: bool,
                            puts: dict[bytes, bytes], deletes: list[bytes],
                            compares: dict[bytes, int], retired: list[ObjectVersion]) -> int:
        raise NotImplementedError

    def _retire(self, versions: list[ObjectVersion], puts: dict[bytes, bytes],
                deletes: list[bytes]) -> None:
        raise NotImplementedError

    async def delete(self, b: Bucket, key: str, version_id: str | None = None,
                     conditions: DeleteConditions | None = None,
                     protect: Callable[[ObjectVersion], None] | None = None,
                     ) -> DeleteResult:
        """Delete the current object (a delete marker when versioned) or one version.

        `conditions` are checked against the target (the current record, or the named
        version) inside the compare-and-swap loop; a missing target is a no-op, except that
        `If-Match` on a key with no live current object raises ObjectNotFound. `protect`
        is called with a version about to be removed for good and may raise (Object Lock).
        Like `commit`, the transaction compares `b`'s revision and re-reads it on conflict.
        """
        tenant, bucket = b.tenant, b.name
        okey = object_key(bucket, key)
        cond = conditions or DeleteConditions()
        ahead = inline_bodies.take_ahead(okey)  # read with the bucket's record (etcd)
        while True:
            cur = ahead[0] if ahead is not None else await self._meta.get(okey)
            ahead = None  # (a retry reads anew)
            cur_v = ObjectVersion.decode(cur.value) if cur else None
            compares = {okey: cur.revision if cur else 0}
            puts: dict[bytes, bytes] = {}
            deletes: list[bytes] = []
            retired: list[ObjectVersion] = []
            result = DeleteResult(version_id=None, delete_marker=False)
            if version_id is None:
                cond.check_current(bucket, key, cur_v)
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
                newest = await self._replace_null(marker, cur_v, marker_id == NULL_VERSION,
                                                  puts, deletes, compares, retired)
                if protect is not None:
                    for r in retired:
                        protect(r)
                puts[okey] = marker.encode()
                puts[version_key(bucket, key, commit_sort(marker_id, newest))] = (
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
                        if not cond.applies_version(cur_v, cur_v, len(rest)):
                            return gone
                        if protect is not None:
                            protect(cur_v)
                        deletes.append(okey)
                        retired.append(cur_v)
                        # (the null version of a key written before versioning was enabled,
                        # in its current record alone): named in the answer like any version
                        result = DeleteResult(version_id=version_id,
                                              delete_marker=cur_v.delete_marker)
                    else:
                        return gone
                else:
                    item, ver = target
                    if not cond.applies_version(ver, cur_v, len(rest)):
                        return gone
                    if protect is not None:
                        protect(ver)
                    deletes.append(item.key)
                    compares[item.key] = item.revision
                    # where it sat: a listing page that ended at it resumes right after
                    puts[version_left_key(bucket, key, version_id)] = left_record(
                        item.key, time.time_ns())  # (kept a retention: version_places)
                    retired.append(ver)
                    result = DeleteResult(version_id=version_id, delete_marker=ver.delete_marker)
                    if cur_v is not None and cur_v.version_id == version_id:
                        if rest:
                            compares[rest[0][0].key] = rest[0][0].revision
                            puts[okey] = rest[0][1].encode()
                        else:
                            deletes.append(okey)
            markers = self._retire([r for r in retired if not r.delete_marker], puts, deletes)
            self.buckets.guard(b, compares)
            if await self._meta.txn(Txn(compares=compares, puts=puts, deletes=tuple(deletes))):
                await retiring.finish_now(self._meta, markers)
                return result
            b = await self.buckets.get(tenant, bucket)  # it may be what changed

    async def is_latest(self, v: ObjectVersion) -> bool:
        cur = await self._meta.get(object_key(v.bucket, v.key))
        return cur is not None and ObjectVersion.decode(cur.value).version_id == v.version_id

    async def update_version(self, b: Bucket, key: str, version_id: str | None,
                             guard: Callable[[ObjectVersion], None] | None = None,
                             edit: Callable[[ObjectVersion], dict[str, object]] | None = None,
                             **changes: object) -> ObjectVersion:
        """Change metadata fields (tags...) of one version of bucket `b`, current one if
        `version_id` is None, in every record that holds it (current and history), with
        compare-and-swap. `guard` sees the version as read in the same loop and may refuse
        (Object Lock); `edit` derives more changes from that same read, so a field changed
        in part (one key of the lock) keeps what a racing edit wrote to the rest of it."""
        bucket = b.name
        tkey = tenant_key(b.tenant)  # compared: no edit commits while a shred scans
        tenant_rev = await self._tenants.revision(b.tenant)
        while True:
            records = await version_records(self._meta, bucket, key, version_id)
            if not records:
                raise ObjectNotFound(bucket, key, version_id)
            updated = records[0][1]
            if updated.delete_marker:
                return updated
            if guard is not None:
                guard(updated)
            fields = {**changes, **(edit(updated) if edit is not None else {})}
            compares, puts = {tkey: tenant_rev}, {}
            for item, v in records:
                for name, value in fields.items():
                    setattr(v, name, value)
                compares[item.key] = item.revision
                puts[item.key] = v.encode()
            if await self._meta.txn(Txn(compares=compares, puts=puts)):
                return updated
            seen = await self._meta.get(tkey)
            if seen is None or seen.revision != tenant_rev:
                tenant_rev = self._tenants.revalidate(b.tenant, None, seen)
