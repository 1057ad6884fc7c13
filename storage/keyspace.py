"""The metadata keyspace: every key prefix, and every key built from names, in one module.

A key is a tuple of text components, its record type (the "space") first, packed with the
FoundationDB tuple-layer rule for byte strings: each component is its UTF-8 bytes with every
`\\x00` written `\\x00\\xff`, followed by a `\\x00` terminator. The packing is

- injective and prefix-free: a component ends at the first `\\x00` not followed by `\\xff`, so
  no name (an object key holding NUL, say) can reach into another name's range;
- order-preserving: tuples compare as their packed bytes, component by component, each
  component by its UTF-8 bytes (S3's listing order), a name before every longer name it
  begins;
- prefix-scannable: the keys whose next component starts with the text `p` are exactly the
  keys starting with `pack(...) + escape(p)` (UTF-8 never holds `\\xff`, so an escaped NUL
  cannot be confused with a terminator followed by the next component).

Layout (layout version `LAYOUT_VERSION`, written last by `storage.keyspace_migration`):

    (B, bucket)                           bucket record
    (TB, tenant, bucket)                  bucket index per tenant (ListBuckets)
    (O, bucket, key)                      current version of an object (its full manifest)
    (V, bucket, key, vsort)               every version, newest first (versioned buckets)
    (IB, bucket, key, ref)                sealed body of a small (inline) object's version,
                                          apart from its record (stores with `inline_apart`:
                                          etcd); `ref` is fresh per commit
    (U, bucket, key, upload id)           multipart upload in progress
    (P, upload id, part:05)               an uploaded part
    (T, tenant)                           tenant record with its wrapped KEK versions
    (K, access key id)                    access key (secret wrapped by the root key)
    (R, stripe hex)                       repair queue entry
    (R, !, stripe hex)                    urgent repair entry (stripe at risk), read first
    (G, due ns:020, stripe hex)           garbage-collection queue entry (shards to delete)
    (X, stripe hex)                       stripe index: the live stripes and their owner
    (XD, stripe hex)                      tombstone of a discarded write's stripe {until}: a
                                          commit indexing the stripe compares it absent, so
                                          one applied late (etcd) after the discard fails;
                                          the collector drops it at `until` (ObjectService
                                          .discard_parts, storage/workers/gc.py)
    (GF, stripe hex)                      collection fence of a live stripe: which copies a
                                          delete claimed, at what generation, which are
                                          being deleted (storage/workers/gcfence.py)
    (L, name)                             lease of a background worker
    (LF, name)                            its fence on SQLite, rewritten by each acquire (not
                                          by renewals): a step's commits compare it
                                          (storage/metadata/fence.py)
    (M, node id)                          cluster-map overlay (membership)
    (RW, tenant)                          KEK rotation: DEKs still to rewrap
    (KMS, tenant, key id)                 named KMS key (material wrapped by the tenant KEK)
    (KA, tenant, alias name)              KMS alias -> key id (unique per tenant)
    (TS, tenant)                          scheduled tenant shred
    (VOL, tenant, volume)                 block volume record
    (VX, volume id, extent:010, gen:010)  extent pointer of a volume
    (VL, volume id)                       attach lease of a volume
    (VJ, volume id, seq:020)              journal segment of a volume (small writes not yet folded)
    (VJK, volume id, seq:020)             journal segment folded by its writer but held by a
                                          snapshot (storage/volume_held.py)
    (VJH, volume id)                      journal head, bumped by every append (volume_journal)
    (VD, volume id)                       a deleted volume's record while its pointers are
                                          retired (storage/volume_gone.py; owner: VolumeService
                                          .delete, finished by the reclaim worker)
    (VC, volume id, token)                a snapshot delete's collect marker (owner:
                                          VolumeService.delete_snapshot / finish_collect)
    (RT, bucket, key, token)              a version or upload of more than `retiring.INLINE_PARTS`
                                          parts whose stripes and part records are still being
                                          retired in bounded steps (storage/retiring.py; owner:
                                          ObjectService / MultipartService, finished by the
                                          reclaim worker after a crash)
    (SG, token)                           a many-part archive copy whose index entries are
                                          staged ahead of its swap, naming its stripes
                                          (storage/archive_staging.py; the swap deletes it,
                                          an undo or the reclaim worker cleans up after it)
    (OW, node id, shard id)               a shard the repair worker's orphan sweep watches
                                          without an owner: {since} on the watch clock
                                          (`S`, `orphan-watch`), so a new lease holder
                                          continues the watch (storage/workers/orphan_watch.py)
    (AR, due ns:020, bucket, key, vid)    archive restore job
    (AE, expiry ns:020, bucket, key, vid) restored copy to retire
    (AL, bucket, staged ns:020, batch)    server-access-log records of a source bucket, staged
                                          by a gateway, waiting for delivery
    (S, name)                             a cluster-wide record: the access-secret KEK,
                                          worker counters (`repair`, `rebalance`)
    (layout)                              the layout version of this store
"""

from __future__ import annotations

from storage.metadata import prefix_end

BUCKET = "B"
TENANT_BUCKET = "TB"
OBJECT = "O"
VERSION = "V"
VERSION_LEFT = "VG"  # where a deleted version sat in its key's history (listing markers)
INLINE_BODY = "IB"
UPLOAD = "U"
PART = "P"
TENANT = "T"
ACCESS_KEY = "K"
REPAIR = "R"
GC = "G"
GC_FENCE = "GF"
STRIPE = "X"
STRIPE_DISCARDED = "XD"  # a discarded write's stripe: no commit may index it any more
LEASE = "L"
LEASE_FENCE = "LF"  # a worker lease's fence (SQLite): changes only when it is acquired
MEMBER = "M"
REWRAP = "RW"
KMS_KEY = "KMS"
KMS_ALIAS = "KA"
SHRED = "TS"
VOLUME = "VOL"
EXTENT = "VX"
VOLUME_LEASE = "VL"
JOURNAL = "VJ"
JOURNAL_KEPT = "VJK"  # folded journal segments a snapshot still replays
JOURNAL_HEAD = "VJH"  # bumped by every journal append: a snapshot sees one land
VOLUME_GONE = "VD"  # a deleted volume whose pointers are still being retired
VOLUME_COLLECT = "VC"  # a volume whose deleted snapshot's pointers are still being retired
RETIRING = "RT"  # a many-part version or upload whose stripes are still being retired
STAGING = "SG"  # a many-part archive copy indexed ahead of its swap (storage/archive_staging)
ORPHAN_WATCH = "OW"  # a shard the orphan sweep watches without an owner (workers/orphan_watch)
RESTORE_QUEUE = "AR"
RESTORE_EXPIRY = "AE"
SYSTEM = "S"
ACCESS_LOG = "AL"
URGENT = "!"  # second component of an urgent repair entry (sorts before hex digits)
LAYOUT = "layout"

LAYOUT_VERSION = 2  # 1: hand-built `NAME/...` keys with NUL separators (before this module)

_NUL = b"\x00"
_ESCAPED_NUL = b"\x00\xff"


class MalformedKey(ValueError):
    """Bytes that are not a packed tuple of UTF-8 components."""


# --- the tuple encoding ----------------------------------------------------------------------


def escape(text: str) -> bytes:
    """One component's bytes without its terminator: UTF-8, NUL written as NUL 0xFF."""
    return text.encode("utf-8").replace(_NUL, _ESCAPED_NUL)


def pack(*parts: str) -> bytes:
    """The key of a tuple of text components (also the prefix of every longer tuple)."""
    joined = "\x00".join(parts)  # no component holds NUL (every request's keys): one encode
    if joined.count("\x00") == len(parts) - 1:
        return joined.encode("utf-8") + _NUL
    return b"".join(escape(p) + _NUL for p in parts)


def unpack(raw: bytes) -> tuple[str, ...]:
    """The components of a packed key; raises `MalformedKey` for anything `pack` never makes."""
    out: list[str] = []
    start = pos = 0
    while start < len(raw):
        end = raw.find(_NUL, pos)
        if end < 0:
            raise MalformedKey(f"unterminated component in {raw!r}")
        if raw[end + 1:end + 2] == b"\xff":  # an escaped NUL inside the component
            pos = end + 2
            continue
        try:
            out.append(raw[start:end].replace(_ESCAPED_NUL, _NUL).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise MalformedKey(f"component is not UTF-8: {raw[start:end]!r}") from exc
        start = pos = end + 1
    return tuple(out)


def last_text(base: bytes, key: bytes) -> str:
    """The one component of `key` after `base` (a listing's object key), without a full
    `unpack`: listings call this once per key."""
    return key[len(base):-1].replace(_ESCAPED_NUL, _NUL).decode("utf-8")


def span(prefix: bytes) -> tuple[bytes, bytes]:
    """The [start, end) range of every tuple extending the packed tuple `prefix`.

    Not `prefix_end(prefix)`: the keys of a name that continues with NUL ("k\\0x" after
    "k") also start with `pack("k")`, then `\\xff`; no component starts with `\\xff`.
    """
    return prefix, prefix + b"\xff"


def text_span(base: bytes, text: str) -> tuple[bytes, bytes]:
    """The range of tuples under `base` whose next component starts with `text` (S3 prefix)."""
    if not text:
        return span(base)
    start = base + escape(text)
    return start, prefix_end(start)


def space(name: str) -> tuple[bytes, bytes]:
    """The range of a whole record type."""
    return span(pack(name))


def next_key(key: bytes) -> bytes:
    """The smallest key greater than `key` (to resume a scan past it)."""
    return key + _NUL


def past_text(base: bytes, text: str) -> bytes:
    """The first key under `base` past every tuple whose next component starts with `text`."""
    return text_span(base, text)[1]


def component(key: bytes, index: int) -> str:
    return unpack(key)[index]


# --- buckets, objects, versions, uploads ---------------------------------------------------


def bucket_key(bucket: str) -> bytes:
    return pack(BUCKET, bucket)


def tenant_bucket_prefix(tenant: str) -> bytes:
    return pack(TENANT_BUCKET, tenant)


def tenant_bucket_key(tenant: str, bucket: str) -> bytes:
    return pack(TENANT_BUCKET, tenant, bucket)


def object_prefix(bucket: str) -> bytes:
    return pack(OBJECT, bucket)


def object_key(bucket: str, key: str) -> bytes:
    return pack(OBJECT, bucket, key)


def version_prefix(bucket: str, key: str | None = None) -> bytes:
    return pack(VERSION, bucket) if key is None else pack(VERSION, bucket, key)


def version_key(bucket: str, key: str, vsort: str) -> bytes:
    return pack(VERSION, bucket, key, vsort)


def version_left_prefix(bucket: str) -> bytes:
    return pack(VERSION_LEFT, bucket)


def version_left_key(bucket: str, key: str, version_id: str) -> bytes:
    """The record of where deleted version `version_id` of `key` sat in the history: a
    ListObjectVersions page that ended at it resumes exactly after it (storage/listing.py)."""
    return pack(VERSION_LEFT, bucket, key, version_id)


def inline_body_prefix(bucket: str, key: str | None = None) -> bytes:
    return pack(INLINE_BODY, bucket) if key is None else pack(INLINE_BODY, bucket, key)


def inline_body_key(bucket: str, key: str, ref: str) -> bytes:
    return pack(INLINE_BODY, bucket, key, ref)


def upload_prefix(bucket: str, key: str | None = None) -> bytes:
    return pack(UPLOAD, bucket) if key is None else pack(UPLOAD, bucket, key)


def upload_key(bucket: str, key: str, upload_id: str) -> bytes:
    return pack(UPLOAD, bucket, key, upload_id)


def part_prefix(upload_id: str) -> bytes:
    return pack(PART, upload_id)


def part_key(upload_id: str, number: int) -> bytes:
    return pack(PART, upload_id, f"{number:05d}")


def bucket_prefixes(bucket: str) -> tuple[bytes, ...]:
    """Every range that holds records of a bucket's contents (empty-bucket checks)."""
    return object_prefix(bucket), version_prefix(bucket), upload_prefix(bucket)


# --- tenants, access keys, rotation --------------------------------------------------------


def tenant_key(tenant: str) -> bytes:
    return pack(TENANT, tenant)


def access_key_key(access_key: str) -> bytes:
    return pack(ACCESS_KEY, access_key)


def rewrap_key(tenant: str) -> bytes:
    return pack(REWRAP, tenant)


def shred_key(tenant: str) -> bytes:
    return pack(SHRED, tenant)


# --- named KMS keys -------------------------------------------------------------------------


def kms_key_prefix(tenant: str) -> bytes:
    return pack(KMS_KEY, tenant)


def kms_key_key(tenant: str, key_id: str) -> bytes:
    return pack(KMS_KEY, tenant, key_id)


def kms_alias_prefix(tenant: str) -> bytes:
    return pack(KMS_ALIAS, tenant)


def kms_alias_key(tenant: str, alias: str) -> bytes:
    return pack(KMS_ALIAS, tenant, alias)


# --- stripes: index, repair and garbage-collection queues ----------------------------------


def stripe_index_key(stripe_id: bytes) -> bytes:
    return pack(STRIPE, stripe_id.hex())


def discarded_key(stripe_id: bytes) -> bytes:
    """The tombstone of a stripe whose write's commit failed and was discarded."""
    return pack(STRIPE_DISCARDED, stripe_id.hex())


def repair_key(stripe_id: bytes) -> bytes:
    return pack(REPAIR, stripe_id.hex())


def urgent_repair_key(stripe_id: bytes) -> bytes:
    """A stripe at risk: (R, !, stripe) sorts before every (R, stripe) and is read first."""
    return pack(REPAIR, URGENT, stripe_id.hex())


def urgent_repair_span() -> tuple[bytes, bytes]:
    return span(pack(REPAIR, URGENT))


def gc_key(ts_ns: int, stripe_id: bytes) -> bytes:
    return pack(GC, f"{ts_ns:020d}", stripe_id.hex())


def gc_fence_key(stripe_id: bytes) -> bytes:
    return pack(GC_FENCE, stripe_id.hex())


def due_before(name: str, ts_ns: int) -> tuple[bytes, bytes]:
    """The range of a time-ordered queue (G, AR, AE) whose entries are due at `ts_ns`."""
    return pack(name), span(pack(name, f"{ts_ns:020d}"))[1]


def stripe_of(key: bytes) -> bytes:
    """The stripe id of an X, R or G entry (its last component)."""
    return bytes.fromhex(unpack(key)[-1])


# --- leases, membership ---------------------------------------------------------------------


def lease_key(name: str) -> bytes:
    return pack(LEASE, name)


def lease_fence_key(name: str) -> bytes:
    return pack(LEASE_FENCE, name)


def member_key(node_id: str) -> bytes:
    return pack(MEMBER, node_id)


MEMBER_EPOCH = "#epoch"  # not a node id (NODE_ID has no '#'): read in the same range as M/


def member_epoch_key() -> bytes:
    """The membership epoch record: rewritten by every node removal, in the removal's own
    transaction; commits compare it (`storage/commit_nodes.py`)."""
    return pack(MEMBER, MEMBER_EPOCH)


# --- block volumes --------------------------------------------------------------------------


def volume_prefix(tenant: str) -> bytes:
    return pack(VOLUME, tenant)


def volume_key(tenant: str, name: str) -> bytes:
    return pack(VOLUME, tenant, name)


def extent_prefix(vid: str, index: int | None = None) -> bytes:
    return pack(EXTENT, vid) if index is None else pack(EXTENT, vid, f"{index:010d}")


def extent_key(vid: str, index: int, gen: int) -> bytes:
    return pack(EXTENT, vid, f"{index:010d}", f"{gen:010d}")


def volume_lease_key(vid: str) -> bytes:
    return pack(VOLUME_LEASE, vid)


def volume_gone_key(vid: str) -> bytes:
    """A deleted volume's record, kept from its delete until its extent pointers and journal
    segments are retired and its origins no longer list it (a killed delete resumes)."""
    return pack(VOLUME_GONE, vid)


def retiring_key(bucket: str, key: str, token: str) -> bytes:
    """A many-part version's or upload's retirement still in progress (`storage.retiring`);
    `token` is fresh per retirement: two null versions retired in turn keep their own."""
    return pack(RETIRING, bucket, key, token)


def orphan_watch_key(node_id: str, sid: str) -> bytes:
    """A shard `sid` on `node_id` the orphan sweep watches (storage/workers/orphan_watch)."""
    return pack(ORPHAN_WATCH, node_id, sid)


def staging_key(token: str) -> bytes:
    """A many-part archive copy's staged index entries (`storage.archive_staging`); `token`
    is fresh per copy."""
    return pack(STAGING, token)


def volume_collect_key(vid: str, token: str) -> bytes:
    """A volume one of whose snapshots was deleted, until the pointers and kept journal
    segments only that snapshot needed are retired (a killed snapshot delete resumes).
    `token` is fresh per delete: two deletes on one volume never drop each other's marker."""
    return pack(VOLUME_COLLECT, vid, token)


def journal_prefix(vid: str) -> bytes:
    return pack(JOURNAL, vid)


def journal_head_key(vid: str) -> bytes:
    """A volume's journal head `{seq}`, written by every append: a snapshot that found the
    journal empty compares its revision, so an append landing before the freeze is seen."""
    return pack(JOURNAL_HEAD, vid)


def journal_key(vid: str, seq: int) -> bytes:
    """A volume's journal segment record; sequence numbers sort numerically (20 digits)."""
    return pack(JOURNAL, vid, f"{seq:020d}")


def kept_journal_prefix(vid: str) -> bytes:
    return pack(JOURNAL_KEPT, vid)


def kept_journal_key(vid: str, seq: int) -> bytes:
    """A journal segment its writer folded that a snapshot still needs (same record)."""
    return pack(JOURNAL_KEPT, vid, f"{seq:020d}")


# --- archive queues -------------------------------------------------------------------------


def archive_job_key(name: str, when_ns: int, bucket: str, key: str, version_id: str) -> bytes:
    """A restore job (AR) or a restored copy's expiry (AE) of one version."""
    return pack(name, f"{when_ns:020d}", bucket, key, version_id)


def archive_job_of(key: bytes) -> tuple[str, str, str]:
    """(bucket, key, version id) of an AR or AE entry."""
    _, _, bucket, k, vid = unpack(key)
    return bucket, k, vid


# --- cluster-wide records -----------------------------------------------------------------


def system_key(name: str) -> bytes:
    return pack(SYSTEM, name)


def tenant_gone_key(tenant: str) -> bytes:
    """A deleted tenant's name: grants that named it (bucket policies, ACLs of other
    tenants) would pass to a new tenant of that name, so creating one needs `reuse`."""
    return pack(SYSTEM, "tenant-gone", tenant)


def canonical_gone_key(canonical_id: str) -> bytes:
    """A deleted tenant's S3 canonical id (its name unless set): ACL grants by id that
    named it would pass to a tenant given it later, so no tenant is given it again (a
    tenant made with `reuse` of the name takes its default one back)."""
    return pack(SYSTEM, "canonical-gone", canonical_id)


# Tenant and access-key records: what a gateway authenticates and authorizes with. Every
# store that writes one also advances a change stamp every process checks per request
# (`auth_stamp` of the stores: a shared counter file on SQLite, a watched key on etcd,
# `storage/metadata/etcd_stamp.py`), so a revoked key is refused at once by every SQLite
# worker and within about a second (usually at once) by every etcd gateway.
_AUTH_PREFIXES = (pack(TENANT), pack(ACCESS_KEY))
AUTH_CHANGE = pack(SYSTEM, "auth-change")  # etcd: its mod_revision is the stamp


def is_auth_record(key: bytes) -> bool:
    """Whether `key` is a tenant or access-key record (see AUTH_CHANGE)."""
    return key.startswith(_AUTH_PREFIXES)


# --- the layout record ------------------------------------------------------------------------


def layout_key() -> bytes:
    return pack(LAYOUT)


# --- server access logs ----------------------------------------------------------------------


def access_log_prefix(bucket: str) -> bytes:
    return pack(ACCESS_LOG, bucket)


def access_log_key(bucket: str, staged_ns: int, batch: str) -> bytes:
    return pack(ACCESS_LOG, bucket, f"{staged_ns:020d}", batch)
