"""Upgrade a metadata store from layout 1 (hand-built `NAME/...` keys, NUL separators) to the
tuple keys of `storage.keyspace`, on first open.

Layout-1 keys all start with `NAME/`; layout-2 keys start with `NAME\\x00`, so the two never
share a range and a scan of an old prefix sees only records still to move. Each record moves
in a compare-and-swap transaction (put the new key, delete the old one; 40 records to a
transaction, one by one when another upgrader got there first), so a crash
leaves every record in exactly one place and a rerun resumes where it stopped; two gateways
upgrading at once each move a record at most once (the loser's compare fails). The layout
record is written last: a store that has it is never scanned again. It works through the
metadata interface only, so SQLite and etcd upgrade the same way.

Where an old key cannot be split unambiguously (an object key holding NUL), the names come
from the record itself (`ObjectVersion` and `Upload` carry bucket, key and version or upload
id). Records that hold keys in their value (a restore's queue and expiry keys, an extent's
stripe index entry) are rewritten as they move. Worker leases are dropped: they are
short-lived, and on etcd attached to leases of the process that took them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgpack

from storage import keyspace as ks
from storage.metadata import Item, MetadataStore, Txn, prefix_end

log = logging.getLogger("tessera.keyspace")
BATCH = 256
PER_TXN = 40  # records moved per transaction (3 operations each; etcd allows 128)
Rebuild = Callable[[bytes, bytes], tuple[bytes, bytes] | None]


def _load(raw: bytes) -> dict:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


def _dump(d: dict) -> bytes:
    return msgpack.packb(d, use_bin_type=True)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8")


def _old_archive_job(old: bytes) -> bytes:
    """`AR/<ns>/<bucket>\\0<key>\\0<vid>` (or AE/) as a layout-2 key. Bucket names and version
    ids never hold NUL, so the key is everything between the first and the last NUL."""
    name, when, rest = old.split(b"/", 2)
    bucket, _, tail = rest.partition(b"\x00")
    key, _, vid = tail.rpartition(b"\x00")
    return ks.archive_job_key(_text(name), int(when), _text(bucket), _text(key), _text(vid))


def _version_record(raw: bytes) -> bytes:
    """An `ObjectVersion` record whose restore state names its queue keys the new way."""
    d = _load(raw)
    r = d.get("restore") or {}
    changed = False
    for field in ("queue_key", "expiry_key"):
        old = r.get(field)
        if isinstance(old, bytes) and b"/" in old[:3]:
            r[field] = _old_archive_job(old)
            changed = True
    return _dump(d) if changed else raw


def _object(old: bytes, raw: bytes) -> tuple[bytes, bytes]:
    d = _load(raw)
    return ks.object_key(d["bucket"], d["key"]), _version_record(raw)


def _version(old: bytes, raw: bytes) -> tuple[bytes, bytes]:
    d = _load(raw)
    vsort = _text(old.rpartition(b"\x00")[2])
    return ks.version_key(d["bucket"], d["key"], vsort), _version_record(raw)


def _upload(old: bytes, raw: bytes) -> tuple[bytes, bytes]:
    d = _load(raw)
    return ks.upload_key(d["bucket"], d["key"], d["upload_id"]), raw


def _split(n: int) -> Callable[[bytes], list[str]]:
    """The `/`-separated fields after the prefix; the first takes any extra `/`."""
    return lambda old: [_text(p) for p in old.split(b"/", 1)[1].rsplit(b"/", n - 1)]


def _fields(build: Callable[..., bytes], n: int) -> Rebuild:
    parts = _split(n)
    return lambda old, raw: (build(*parts(old)), raw)


def _stripe_index(old: bytes, raw: bytes) -> tuple[bytes, bytes]:
    d = _load(raw)
    vx = d.get("vx")
    if isinstance(vx, bytes) and vx.startswith(b"VX/"):
        vid, index, gen = _split(3)(vx)
        d["vx"] = ks.extent_key(vid, int(index), int(gen))
        raw = _dump(d)
    return ks.pack(ks.STRIPE, _split(1)(old)[0]), raw


def _extent(old: bytes, raw: bytes) -> tuple[bytes, bytes]:
    vid, index, gen = _split(3)(old)
    return ks.extent_key(vid, int(index), int(gen)), raw


def _repair(old: bytes, raw: bytes) -> tuple[bytes, bytes]:
    stripe = _split(1)(old)[0]  # `R/!<hex>`: a stripe at risk
    if stripe.startswith(ks.URGENT):
        return ks.pack(ks.REPAIR, ks.URGENT, stripe[1:]), raw
    return ks.pack(ks.REPAIR, stripe), raw


def _gc(old: bytes, raw: bytes) -> tuple[bytes, bytes]:
    when, stripe = _split(2)(old)
    return ks.pack(ks.GC, when, stripe), raw


RULES: dict[bytes, Rebuild | None] = {
    b"B/": _fields(ks.bucket_key, 1),
    b"TB/": _fields(ks.tenant_bucket_key, 2),
    b"O/": _object,
    b"V/": _version,
    b"U/": _upload,
    b"P/": lambda old, raw: (ks.part_key(_split(2)(old)[0], int(_split(2)(old)[1])), raw),
    b"T/": _fields(ks.tenant_key, 1),
    b"K/": _fields(ks.access_key_key, 1),
    b"R/": _repair,
    b"G/": _gc,
    b"X/": _stripe_index,
    b"L/": None,  # worker leases: dropped
    b"M/": _fields(ks.member_key, 1),
    b"RW/": _fields(ks.rewrap_key, 1),
    b"TS/": _fields(ks.shred_key, 1),
    b"VOL/": _fields(ks.volume_key, 2),
    b"VX/": _extent,
    b"VL/": _fields(ks.volume_lease_key, 1),
    b"AR/": lambda old, raw: (_old_archive_job(old), raw),
    b"AE/": lambda old, raw: (_old_archive_job(old), raw),
    b"S/": _fields(ks.system_key, 1),
}


async def upgrade(meta: MetadataStore) -> int:
    """Bring the store to `LAYOUT_VERSION`; returns how many records moved (0 when current)."""
    item = await meta.get(ks.layout_key())
    if item is not None and int(_load(item.value)["version"]) >= ks.LAYOUT_VERSION:
        return 0
    moved = 0
    for old_prefix, rebuild in RULES.items():
        moved += await _move_prefix(meta, old_prefix, rebuild)
    await meta.put(ks.layout_key(), _dump({"fv": 1, "version": ks.LAYOUT_VERSION}))
    if moved:
        log.info("metadata keys upgraded to layout %d: %d records moved",
                 ks.LAYOUT_VERSION, moved)
    return moved


async def _move_prefix(meta: MetadataStore, old_prefix: bytes, rebuild: Rebuild | None) -> int:
    moved = 0
    end = prefix_end(old_prefix)
    while True:
        items = await meta.range(old_prefix, end, limit=BATCH)
        for i in range(0, len(items), PER_TXN):
            moved += await _move(meta, items[i:i + PER_TXN], rebuild)
        if len(items) < BATCH:
            return moved


async def _move(meta: MetadataStore, items: list[Item], rebuild: Rebuild | None) -> int:
    """Move `items` in one transaction; one by one if another upgrader moved some first."""
    txns = []
    for it in items:
        out = rebuild(it.key, it.value) if rebuild is not None else None
        txns.append(Txn(compares={it.key: it.revision},
                        puts={out[0]: out[1]} if out is not None else {}, deletes=(it.key,)))
    whole = Txn(compares={k: v for t in txns for k, v in t.compares.items()},
                puts={k: v for t in txns for k, v in t.puts.items()},
                deletes=tuple(k for t in txns for k in t.deletes))
    if await meta.txn(whole):
        return len(items)
    return sum([await meta.txn(t) for t in txns])
