"""Listing objects and versions: pages of current records (O/) and of the history (V/).

Pages are bounded range scans that resume from the last key, so page after page costs the
same however large the bucket; a delimiter's common prefix is skipped over in one step.
"""

from __future__ import annotations

from storage.keyspace import (
    last_text,
    next_key,
    object_key,
    object_prefix,
    past_text,
    span,
    text_span,
    version_key,
    version_left_key,
    version_prefix,
)
from storage.metadata import Item, MetadataStore
from storage.records import Bucket, ObjectVersion
from storage.version_ids import made_at
from storage.version_places import left_place

NULL_VERSION = "null"
# How long after its id was made a version's commit is looked for (a write that takes longer
# is refused at its commit: `repair.orphan_grace_s`, a day by default).
MARKER_SEARCH_NS = 2 * 86400 * 10**9


class Listing:
    """ListObjects(V2) and ListObjectVersions over the metadata store."""

    def __init__(self, meta: MetadataStore) -> None:
        self._meta = meta

    async def list(self, b: Bucket, prefix: str = "", delimiter: str = "",
                   start_after: str = "", max_keys: int = 1000,
                   ) -> tuple[list[ObjectVersion], list[str], bool, str]:
        """One page of current versions: (objects, common prefixes, truncated, last key).

        With a delimiter, each common prefix is returned once and the scan skips past it.
        """
        bucket = b.name
        base = object_prefix(bucket)
        start, end = text_span(base, prefix)
        if start_after:
            start = max(start, next_key(object_key(bucket, start_after)))
            pos = start_after.find(delimiter, len(prefix)) if delimiter else -1
            if pos >= 0 and start_after.startswith(prefix):
                # a marker or token inside a common prefix: that prefix was already returned
                start = max(start, past_text(base, start_after[: pos + len(delimiter)]))
        objs: list[ObjectVersion] = []
        prefixes: list[str] = []
        last = ""
        # max_keys + 1 records at least: a full page learns whether more follow from the
        # same read (one round trip per page, not two: what etcd pages cost)
        batch_limit = min(max(1000, max_keys + 1), max_keys * 2 + 1)
        while len(objs) + len(prefixes) < max_keys:
            batch = await self._meta.range(start, end, limit=batch_limit)
            if not batch:
                return objs, prefixes, False, last
            for item in batch:
                if len(objs) + len(prefixes) >= max_keys:
                    return objs, prefixes, True, last
                if delimiter:
                    key = last_text(base, item.key)
                    pos = key.find(delimiter, len(prefix))
                    if pos >= 0 and not ObjectVersion.decode(item.value).delete_marker:
                        # (a key whose current version is a delete marker is not listed,
                        # so it makes no common prefix either)
                        cp = key[: pos + len(delimiter)]
                        prefixes.append(cp)
                        last = cp
                        start = past_text(base, cp)
                        break
                v = ObjectVersion.decode(item.value)
                start = next_key(item.key)
                last = v.key
                if not v.delete_marker:
                    objs.append(v)
            else:
                if len(batch) < batch_limit:
                    return objs, prefixes, False, last
        more = bool(await self._meta.range(start, end, limit=1))
        return objs, prefixes, more, last

    async def list_versions(self, b: Bucket, prefix: str = "", key_marker: str = "",
                            version_marker: str = "", max_keys: int = 1000,
                            delimiter: str = "",
                            ) -> tuple[list[ObjectVersion], list[str], bool, str]:
        """One page of versions in key order, newest first per key (unversioned objects as
        'null'): (versions, common prefixes, truncated, the page's last key or prefix).

        With a delimiter, the keys that hold it after the prefix are returned once, as
        their common prefix, which counts against `max_keys` (S3's rule); a key marker
        inside a common prefix resumes past that prefix."""
        if not b.versioning:
            return await self.list(b, prefix, delimiter, key_marker, max_keys)
        if not delimiter:
            found, more = await self._versions(b, prefix, key_marker, version_marker, max_keys)
            return found, [], more, found[-1].key if found else ""
        versions: list[ObjectVersion] = []
        prefixes: list[str] = []
        past, last = "", ""
        pos = key_marker.find(delimiter, len(prefix)) if key_marker.startswith(prefix) else -1
        if pos >= 0:  # a marker inside a common prefix: that prefix was already returned
            past, key_marker, version_marker = key_marker[:pos + len(delimiter)], "", ""
        called: tuple[str, str, str] | None = None
        while len(versions) + len(prefixes) < max_keys:
            if called == (key_marker, version_marker, past):  # never loop without progress
                raise RuntimeError("version listing made no progress")
            called = (key_marker, version_marker, past)
            # more than the page still holds (as list() reads): keys under a common prefix
            # count once, and the rest of the batch is read on, not read again
            want = max(max_keys - len(versions) - len(prefixes), min(1000, 2 * max_keys))
            batch, more = await self._versions(b, prefix, key_marker, version_marker, want,
                                               past)
            for v in batch:
                if past and v.key.startswith(past):
                    continue
                if len(versions) + len(prefixes) >= max_keys:
                    return versions, prefixes, True, last
                pos = v.key.find(delimiter, len(prefix))
                if pos >= 0:
                    past = last = v.key[:pos + len(delimiter)]
                    prefixes.append(past)
                    continue
                versions.append(v)
                key_marker, version_marker, last = v.key, v.version_id or NULL_VERSION, v.key
            if not more:
                return versions, prefixes, False, last
        batch, _ = await self._versions(b, prefix, key_marker, version_marker, 1, past)
        return versions, prefixes, bool(batch), last

    async def _versions(self, b: Bucket, prefix: str, key_marker: str, version_marker: str,
                        max_keys: int, past: str = "") -> tuple[list[ObjectVersion], bool]:
        """Versions of a versioned bucket after the markers and past every key starting with
        `past` (a common prefix already returned), no delimiter: (versions, truncated)."""
        bucket = b.name
        start, end = text_span(version_prefix(bucket), prefix)
        if past:
            start = max(start, past_text(version_prefix(bucket), past))
        if key_marker:
            mine, after = span(version_prefix(bucket, key_marker))
            if version_marker and after > start:
                start = max(start, await self._past_version(bucket, key_marker, version_marker))
            else:
                start = max(start, after)
        limit = max_keys + 1
        items = await self._meta.range(start, end, limit=limit)
        found = [ObjectVersion.decode(item.value) for item in items]
        more = len(items) == limit
        found, more = await self._merge_unversioned(bucket, prefix, key_marker, found, more,
                                                    max_keys, past)
        if len(found) > max_keys:
            return found[:max_keys], True
        return found, more

    async def _past_version(self, bucket: str, key: str, version_marker: str) -> bytes:
        """Where `key`'s history resumes after `version_marker`. An id that says when it was
        made (storage/version_ids) is looked for among the versions committed since, oldest
        first, a few reads; if not there (committed before its id's time by a release that
        did not hold commit >= made, or long after), through the whole history in bounded
        batches, as any other id ("null", those of older releases). If gone (deleted between
        two pages), right after the place its delete recorded (`version_left_key`): resuming
        at its id's time instead skipped a version committed while the marker's write was in
        flight (committed after the id was made, before the marker). Without that record
        (dropped after `[lifecycle] version_place_retention_s`, or deleted by an older
        release), a timed id resumes at its time (and may skip such a version), another id
        past the whole history: the listing still ends."""
        start, end = span(version_prefix(bucket, key))
        tail = b"." + version_marker.encode() + b"\x00"

        def named(item: Item) -> bool:  # the key ends with its sort key "<time>.<version id>"
            return (item.key.endswith(tail)
                    and ObjectVersion.decode(item.value).version_id == version_marker)
        made = made_at(version_marker)
        gone = end
        if made is not None:
            gone = at = version_key(bucket, key, f"{(1 << 64) - made + 1:020d}")  # not older
            newest = version_key(bucket, key, f"{(1 << 64) - made - MARKER_SEARCH_NS:020d}")
            limit = 16  # it is committed right after its id is made: the first few
            while True:
                batch = await self._meta.range(max(start, newest), at, limit=limit,
                                               reverse=True)
                for item in batch:
                    if named(item):
                        return next_key(item.key)
                if len(batch) < limit:
                    break
                at, limit = batch[-1].key, 1000
        while True:
            batch = await self._meta.range(start, end, limit=1000)
            for item in batch:
                if named(item):
                    return next_key(item.key)
            if len(batch) < 1000:
                break
            start = next_key(batch[-1].key)
        left = await self._meta.get(version_left_key(bucket, key, version_marker))
        if left is not None:
            return next_key(left_place(left.value))
        return gone

    async def _merge_unversioned(self, bucket: str, prefix: str, key_marker: str,
                                 found: list[ObjectVersion], more: bool, max_keys: int,
                                 past: str = "") -> tuple[list[ObjectVersion], bool]:
        """Add the "null" versions written before versioning was enabled (they are only
        in their current record until a newer version moves them to the history).

        `found` is the history read from the same place: a key up to its last key (all of
        them if not `more`) has a history iff it is in `found`, and the merge stops there,
        so no key needs a lookup of its own."""
        start, end = text_span(object_prefix(bucket), prefix)
        if past:
            start = max(start, past_text(object_prefix(bucket), past))
        if key_marker:
            start = max(start, next_key(object_key(bucket, key_marker)))
        limit = max_keys + 1
        items = await self._meta.range(start, end, limit=limit)
        history = {v.key for v in found}
        bound = found[-1].key if more and found else None
        extra = []
        for item in items:
            v = ObjectVersion.decode(item.value)
            if bound is not None and v.key > bound:
                break
            if v.version_id == NULL_VERSION and v.key not in history:
                extra.append(v)
        if not extra:
            return found, more
        if len(items) == limit:
            last_o = ObjectVersion.decode(items[-1].value).key
            bound = last_o if bound is None else min(bound, last_o)
            more = True
        merged = sorted(found + extra, key=lambda x: x.key.encode("utf-8"))
        if bound is not None:
            merged = [x for x in merged if x.key <= bound]
        return merged, more
