"""Small objects' sealed bodies kept apart from their records, on stores that ask for it.

A small object's sealed bytes are part of its manifest (`PartLayout.inline`). On etcd every
record a listing page scans crosses the JSON gateway (JSON + base64 in etcd and here), so a
1,000-key page of 4 KiB objects was ~6 MB of JSON, nine tenths of it bodies no listing
shows. A store with `inline_apart` (etcd) keeps each body under its own key instead,
`(IB, bucket, key, ref)`, outside every listed range; the record keeps `body_ref`:

- a commit puts the body in the same transaction as the record (`apart`), under a `ref`
  drawn fresh for that commit, so no two versions share a body key (a null version
  rewritten, an object copied onto itself, the same version id in O and V records);
- whatever retires a version (overwrite, delete, shred, transition) deletes its bodies in
  the transaction that retires it (`retire`), never earlier;
- reads resolve a record's body (`resolve`); the current version and its key's bodies are
  read in one request (`read_current`), so a GET costs no extra round trip.

Records written with the body inside (SQLite, and etcd data from before this) stay valid
as they are: a part with `inline` bytes needs nothing resolved, so no upgrade pass is needed.
"""

from __future__ import annotations

import dataclasses
import os
from contextvars import ContextVar

from storage.errors import ObjectNotFound
from storage.keyspace import inline_body_key, inline_body_prefix, object_key, span
from storage.metadata import Item, MetadataStore
from storage.records import ObjectVersion

CURRENT_BODIES = 4  # bodies read with a current record (more than one: an overwrite's race)
# A current record read ahead with its bucket's (`read_ahead`): (record key, the record or
# None, its first bodies or None: not read), taken by the request's first read of that key (`take_ahead`). Set in
# the request's own task (aiohttp runs each request in one), so it never reaches another.
_AHEAD: ContextVar[tuple[bytes, Item | None, list[Item] | None] | None] = ContextVar(
    "tessera_read_ahead", default=None)


def enabled(meta: MetadataStore) -> bool:
    """Whether `meta` keeps inline bodies apart from their records."""
    return bool(getattr(meta, "inline_apart", False))


def apart(meta: MetadataStore, v: ObjectVersion) -> tuple[ObjectVersion, dict[bytes, bytes]]:
    """(the version as its records store it, the body keys to put with them) for a commit.

    Only on a store with `inline_apart` and for parts holding inline bytes; every other
    version is returned as is, with no bodies."""
    if not enabled(meta) or not any(p.inline for p in v.parts):
        return v, {}
    bodies: dict[bytes, bytes] = {}
    parts = []
    for p in v.parts:
        if p.inline:
            ref = os.urandom(8).hex()  # fresh even if `p` came with one (a copied part)
            bodies[inline_body_key(v.bucket, v.key, ref)] = p.inline
            p = dataclasses.replace(p, body_ref=ref)  # encoded without the bytes
        parts.append(p)
    return dataclasses.replace(v, parts=parts), bodies


def retire(v: ObjectVersion, deletes: list[bytes]) -> None:
    """Add to `deletes` the body keys of a version leaving the store."""
    for p in v.parts:
        if p.body_ref:
            deletes.append(inline_body_key(v.bucket, v.key, p.body_ref))


def unresolved(v: ObjectVersion) -> bool:
    return any(p.body_ref and not p.inline for p in v.parts)


async def resolve(meta: MetadataStore, v: ObjectVersion,
                  found: dict[bytes, bytes] | None = None) -> ObjectVersion:
    """Fill in the inline bytes of `v`'s parts kept apart (from `found`, else read).

    A body missing means the version was retired after its record was read: the version
    is gone (ObjectNotFound), as a reader arriving a moment later would be told."""
    for p in v.parts:
        if p.body_ref and not p.inline:
            k = inline_body_key(v.bucket, v.key, p.body_ref)
            body = (found or {}).get(k)
            if body is None:
                item = await meta.get(k)
                if item is None:
                    raise ObjectNotFound(v.bucket, v.key, v.version_id)
                body = item.value
            p.inline = body
    return v


async def read_ahead(meta: MetadataStore, other: bytes, bucket: str, key: str,
                     bodies: bool) -> Item | None:
    """Record `other` (the bucket's), read in one request with `bucket`/`key`'s current
    record and, if `bodies` (a GET's), its first bodies, which this request's next read of
    that key then takes instead of reading again (`take_ahead`): a GET or HEAD costs one
    round trip, not two. A HEAD or DeleteObject uses no body, so reads none (the read
    comes before authentication: a refused request makes etcd ship no body it would not
    have shipped anyway). One snapshot at the request's start, as the two reads in turn
    were (both linearizable, both within the request). Only on a store keeping bodies apart
    (`enabled`)."""
    okey = object_key(bucket, key)
    if bodies:
        [item, current], found = await meta.get_and_range(  # type: ignore[attr-defined]
            (other, okey), *span(inline_body_prefix(bucket, key)), CURRENT_BODIES)
    else:
        [item, current] = await meta.get_many((other, okey))  # type: ignore[attr-defined]
        found = None
    _AHEAD.set((okey, current, found))
    return item


def take_ahead(okey: bytes) -> tuple[Item | None, list[Item] | None] | None:
    """Record `okey` (None: absent) and its first bodies (None: not read) as this request
    read them ahead (`read_ahead`), once: a later read of it in this request reads anew.
    None: not read ahead."""
    ahead = _AHEAD.get()
    if ahead is None or ahead[0] != okey:
        return None
    _AHEAD.set(None)
    return ahead[1], ahead[2]


async def read_current(meta: MetadataStore, bucket: str, key: str, bodies: bool = True
                       ) -> tuple[Item | None, ObjectVersion | None]:
    """The current record of `bucket`/`key` and its version, with bodies resolved if
    `bodies` (else left unresolved: a HEAD's, whose answer uses none).

    On a store keeping bodies apart, the record and the first bodies under the key are
    read together (one request, one snapshot; or taken once from `read_ahead`);
    elsewhere this is the plain read."""
    okey = object_key(bucket, key)
    if not enabled(meta):
        item = await meta.get(okey)
        return item, ObjectVersion.decode(item.value) if item is not None else None
    ahead = take_ahead(okey)
    if not bodies:
        item = ahead[0] if ahead is not None else await meta.get(okey)
        return item, ObjectVersion.decode(item.value) if item is not None else None
    for attempt in range(3):
        found: list[Item] | None
        if attempt == 0 and ahead is not None:
            item, found = ahead  # (found None: read ahead without bodies, read one by one)
        else:
            [item], found = await meta.get_and_range(  # type: ignore[attr-defined]
                (okey,), *span(inline_body_prefix(bucket, key)), CURRENT_BODIES)
        if item is None:
            return None, None
        v = ObjectVersion.decode(item.value)
        try:
            return item, await resolve(meta, v, {b.key: b.value for b in found or ()})
        except ObjectNotFound:
            if attempt == 2:  # a record whose body is missing: say so, do not spin
                raise
            # else overwritten between the two reads of a body past the first few
    raise AssertionError("unreachable")
