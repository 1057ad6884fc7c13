"""Metadata records (see docs/ARCHITECTURE.md); the keys they live under are built only by
`storage.keyspace`.

Every record is a msgpack map with a format version `fv`; `decode` upgrades old versions.
"""

from __future__ import annotations

import functools
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, TypeVar

import msgpack

FORMAT_VERSION = 1

R = TypeVar("R", bound="Record")


@functools.cache
def field_names(cls: type) -> frozenset[str]:
    """The fields a record class knows; others (from a newer writer) are ignored on decode."""
    return frozenset(f.name for f in fields(cls))


@functools.cache
def field_order(cls: type) -> tuple[str, ...]:
    """A dataclass's field names in declaration order (the order records are written in)."""
    return tuple(f.name for f in fields(cls))


@functools.cache
def field_defaults(cls: type) -> dict[str, Any]:
    """A dataclass's fields that have a default, with it (a factory's empty value)."""
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def lean_fields(obj: object) -> dict[str, Any]:
    """A dataclass's fields, less those equal to their default (same type and value).

    What object records are written as: decoding fills an absent field with its default,
    which every reader of these records (this one and older ones) does, so dropping them
    changes no value read. A listing page ranges over whole records, and on etcd each
    crosses the JSON gateway: a 4 KiB object's record is ~30% smaller without them.
    """
    defaults = field_defaults(type(obj))
    d = {}
    for n in field_order(type(obj)):
        v = getattr(obj, n)
        if n in defaults:
            dv = defaults[n]
            if v is dv or (type(v) is type(dv) and v == dv):
                continue
        d[n] = v
    return d


def _plain(obj: object) -> dict[str, Any]:
    """msgpack's `default`: a nested dataclass (a `PartLayout`) as the dict `asdict` makes,
    less the fields at their default (`lean_fields`)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        d = lean_fields(obj)
        if d.get("body_ref"):  # a part (PartLayout): its sealed body under its own key
            d.pop("inline", None)  # (storage.inline_bodies) is never stored twice
        return d
    raise TypeError(f"cannot encode {type(obj).__name__} in a record")


def encode_fields(obj: object, skip: tuple[str, ...] = ()) -> bytes:
    """msgpack of a dataclass record with its format version: the bytes `asdict` then
    `packb` give, without `asdict`'s deep copy (several times slower on the request path)."""
    d = {n: getattr(obj, n) for n in field_order(type(obj)) if n not in skip}
    d["fv"] = FORMAT_VERSION
    return msgpack.packb(d, use_bin_type=True, default=_plain)


@dataclass
class Record:
    """Base: msgpack encode/decode of a dataclass with a format version."""

    def encode(self) -> bytes:
        return encode_fields(self)

    @classmethod
    def decode(cls: type[R], raw: bytes) -> R:
        d = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        d.pop("fv", None)
        names = field_names(cls)
        if not d.keys() <= names:  # fields of a newer writer: dropped
            d = {k: v for k, v in d.items() if k in names}
        return cls._from_dict(d)

    @classmethod
    def _from_dict(cls: type[R], d: dict[str, Any]) -> R:
        return cls(**d)


@dataclass
class PartLayout:
    """Where one part's stripe lives: its profile, and the node of each shard index."""

    number: int
    size: int
    etag: str
    stripe_id: bytes
    k: int
    m: int
    segment_size: int
    nodes: list[str | None]
    profile: str = "standard"
    checksums: dict[str, str] = field(default_factory=dict)
    # zstd-compressed before encryption (archive profiles): `size` is then the stored
    # (compressed) byte count the stripe holds, `plain_size` the part's plaintext bytes.
    compressed: bool = False
    plain_size: int = 0
    # A small object's sealed bytes kept in the manifest itself (no stripe, no shards).
    inline: bytes = b""
    # ...or kept apart under (IB, bucket, key, body_ref) (storage.inline_bodies): a record
    # read from the store then has `inline` empty until its body is resolved.
    body_ref: str = ""

    @property
    def plaintext_size(self) -> int:
        return self.plain_size if self.compressed else self.size


@dataclass
class ObjectVersion(Record):
    bucket: str
    key: str
    version_id: str
    tenant: str
    size: int
    etag: str
    last_modified: float
    parts: list[PartLayout] = field(default_factory=list)
    dek: bytes = b""
    kek_version: int = 0
    content_type: str = "binary/octet-stream"
    user_meta: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    storage_class: str = "STANDARD"
    delete_marker: bool = False
    checksums: dict[str, str] = field(default_factory=dict)
    checksum_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    sse: dict[str, str] = field(default_factory=dict)
    identity_version: str = ""
    restore: dict[str, Any] = field(default_factory=dict)
    # S3 ACL: {"owner": tenant, "grants": [[grantee kind, grantee, permission], ...]};
    # empty means the bucket's tenant owns it with FULL_CONTROL (see gateway/s3/acl.py).
    acl: dict[str, Any] = field(default_factory=dict)
    lock: dict[str, Any] = field(default_factory=dict)  # Object Lock, see object_lock.py
    upload_id: str = ""  # the multipart upload that made this version, if any

    def encode(self) -> bytes:
        d = lean_fields(self)
        d["fv"] = FORMAT_VERSION
        return msgpack.packb(d, use_bin_type=True, default=_plain)

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> ObjectVersion:
        known = field_names(PartLayout)  # a newer writer may add part fields
        d["parts"] = [PartLayout(**p) if p.keys() <= known
                      else PartLayout(**{k: v for k, v in p.items() if k in known})
                      for p in d.get("parts", [])]
        return cls(**d)


# in ObjectVersion.sse: the tenant whose KMS key wraps an SSE-KMS version's data key, when not
# the version's (a writer under a grant: AWS resolves the key in the requester's account)
KMS_TENANT = "kms_tenant"


def kms_owner(v: ObjectVersion) -> str:
    """The tenant whose KMS key wraps an SSE-KMS version's data key (its keys' destruction
    destroys the version: `object_lock.shred_blocker`)."""
    return v.sse.get(KMS_TENANT) or v.tenant


@dataclass
class Bucket(Record):
    name: str
    tenant: str
    created: float
    region: str = "us-east-1"
    versioning: str = ""  # "" (never enabled), "Enabled", "Suspended"
    config: dict[str, Any] = field(default_factory=dict)  # tagging, cors, policy, ...
    # The metadata revision this record was read at (0: not read from the store). Not
    # stored: commits compare it, so a write decided on this record fails if it changed.
    revision: int = field(default=0, compare=False)
    # Taken from the gateway's bucket cache, not read for this request (not stored): a
    # commit that finds the record changed raises BucketChanged instead of retrying, so the
    # whole request runs again on the current record (gateway/s3/server.py).
    cached: bool = field(default=False, compare=False)

    def encode(self) -> bytes:
        return encode_fields(self, skip=("revision", "cached"))


@dataclass
class Tenant(Record):
    name: str
    created: float
    keks: dict[int, bytes] = field(default_factory=dict)
    current_kek: int = 1
    # active | shredding (writes refused: TenantService.fence) | shredded | deleting (a
    # `tessera tenant delete` began: storage.tenant_delete)
    state: str = "active"
    reclaimed: float = 0.0  # when a shredded tenant's records and shards were all reclaimed
    # S3 identity (ACL owner and grantee): canonical id and display name default to the name.
    canonical_id: str = ""
    display_name: str = ""
    email: str = ""
    # S3 public access block for every bucket of the tenant (account level), OR-ed with each
    # bucket's own: {"BlockPublicAcls": bool, ...}
    public_access_block: dict[str, bool] = field(default_factory=dict)
    # this tenant record's own id: a tenant made again under a deleted one's name (`reuse`)
    # gets a new one, so the old tenant's access keys stay the old tenant's ("" before s22)
    incarnation: str = ""


@dataclass
class AccessKey(Record):
    access_key: str
    tenant: str
    secret: bytes  # wrapped by the root key
    created: float
    role: str = "tenant"  # tenant | admin
    state: str = "active"
    incarnation: str = ""  # the tenant record's (Tenant.incarnation) the key was made for


def same_incarnation(key: AccessKey, tenant: Tenant) -> bool:
    """Whether `key` was made for this record of its tenant (not a deleted namesake's). A
    side without one (written by a process that predates the field: an older gateway of a
    set drops it when it rewrites the record or makes a key) counts as matching, as keys
    matched by name before, so an upgrade never locks a tenant out of its keys."""
    return not key.incarnation or not tenant.incarnation or key.incarnation == \
        tenant.incarnation



def pack(d: dict[str, Any]) -> bytes:
    return msgpack.packb({"fv": FORMAT_VERSION, **d}, use_bin_type=True)


def unpack(raw: bytes) -> dict[str, Any]:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)
