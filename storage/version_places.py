"""Where deleted versions sat in their key's history (`(VG, bucket, key, version id)`), kept
for a retention so a ListObjectVersions page that ended at a version deleted before the next
page resumes exactly after it (storage/listing.py `_past_version`).

The delete puts the record in its own transaction (storage/object_edits.py), with its time;
the lifecycle pass drops the records older than `[lifecycle] version_place_retention_s`
(`prune`, every bucket, rules or not), so a bucket whose versions are deleted all the time
keeps about a retention's worth of them, not one per version ever deleted. A marker whose
record is gone resumes at the time in its id (documented limit: a version committed while the
marker's write was in flight can then be skipped). DeleteBucket and reclaim drop a whole
bucket's records with it."""

from __future__ import annotations

import msgpack

from storage.keyspace import next_key, span, version_left_prefix
from storage.metadata import MetadataStore, Txn

FORMAT_VERSION = 1
PAGE = 100  # records per read and per delete transaction (under etcd's default 128 ops)


def left_record(history_key: bytes, deleted_ns: int) -> bytes:
    """The value of a `version_left_key` record: the history key the deleted version had and
    when it was deleted (ns)."""
    return msgpack.packb({"fv": FORMAT_VERSION, "at": history_key, "t": deleted_ns},
                         use_bin_type=True)


def left_place(value: bytes) -> bytes:
    """The history key a `left_record` names."""
    return bytes(msgpack.unpackb(value, raw=False)["at"])


def _deleted_ns(value: bytes) -> int:
    """When the version was deleted; 0 for a record without a time (written before records
    had one: dropped by the first pass)."""
    return int(msgpack.unpackb(value, raw=False).get("t", 0))


async def prune(meta: MetadataStore, bucket: str, before_ns: int) -> int:
    """Delete `bucket`'s records of versions deleted before `before_ns`, a page per
    transaction; each delete compares the record's revision, so a record put again meanwhile
    (version "null" deleted again) stays. Returns how many were deleted."""
    start, end = span(version_left_prefix(bucket))
    dropped = 0
    while items := await meta.range(start, end, limit=PAGE):
        old = {i.key: i.revision for i in items if _deleted_ns(i.value) < before_ns}
        if old and await meta.txn(Txn(compares=old, deletes=tuple(old))):
            dropped += len(old)
        elif old:  # one was put again meanwhile: each on its own
            for key, rev in old.items():
                dropped += await meta.txn(Txn(compares={key: rev}, deletes=(key,)))
        if len(items) < PAGE:
            break
        start = next_key(items[-1].key)
    return dropped
