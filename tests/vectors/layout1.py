"""Metadata key layout 1 (main at df444a3 and before): hand-built `NAME/...` keys with NUL
separators. Used to build the data directories old code wrote, for the migration tests.

`to_layout1` maps a layout-2 record (key, value) to the bytes df444a3's key builders made
(`storage/records.py`, `multipart.py`, `archive.py`, `volume_records.py`, `leases.py`, ...).
"""

from __future__ import annotations

import msgpack

from storage import keyspace as ks

_PLAIN = {ks.BUCKET, ks.TENANT, ks.ACCESS_KEY, ks.STRIPE, ks.LEASE, ks.MEMBER, ks.REWRAP,
          ks.SHRED, ks.VOLUME_LEASE, ks.SYSTEM}


def _e(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def old_key(key: bytes) -> bytes:
    """The layout-1 spelling of a layout-2 key."""
    name, *parts = ks.unpack(key)
    head = _e(name) + b"/"
    if name in _PLAIN:
        return head + _e(parts[0])
    if name == ks.REPAIR:
        return head + (b"!" + _e(parts[1]) if parts[0] == ks.URGENT else _e(parts[0]))
    if name in (ks.TENANT_BUCKET, ks.PART, ks.GC, ks.VOLUME, ks.EXTENT):
        return head + b"/".join(_e(p) for p in parts)
    if name in (ks.OBJECT, ks.VERSION, ks.UPLOAD):
        return head + b"\x00".join(_e(p) for p in parts)
    if name in (ks.RESTORE_QUEUE, ks.RESTORE_EXPIRY):
        return head + _e(parts[0]) + b"/" + b"\x00".join(_e(p) for p in parts[1:])
    raise ValueError(f"no layout-1 key for {key!r}")


def old_value(key: bytes, raw: bytes) -> bytes:
    """Values that hold keys (a restore's queue keys, an extent's X entry) hold old ones."""
    name = ks.unpack(key)[0]
    if name not in (ks.OBJECT, ks.VERSION, ks.STRIPE):
        return raw
    d = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    r = d.get("restore") or {}
    for f in ("queue_key", "expiry_key"):
        if isinstance(r.get(f), bytes):
            r[f] = old_key(r[f])
    if isinstance(d.get("vx"), bytes):
        d["vx"] = old_key(d["vx"])
    return msgpack.packb(d, use_bin_type=True)


# Records layout 1 never had: the layout record itself, and kinds added since (a worker
# lease's fence, written at each acquire; a discarded write's tombstone).
_LATER = {ks.LAYOUT, ks.LEASE_FENCE, ks.STRIPE_DISCARDED}


def in_layout1(key: bytes) -> bool:
    """Whether layout 1 had a record of this key's kind."""
    return ks.unpack(key)[0] not in _LATER


def to_layout1(rows: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Every record as df444a3 stored it; records of kinds it did not have are left out."""
    return [(old_key(k), old_value(k, v)) for k, v in rows if in_layout1(k)]
