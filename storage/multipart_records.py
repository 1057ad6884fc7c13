"""Multipart upload records (see `storage.keyspace` for the key layout):

    (U, bucket, key, upload id)   `Upload`: options, wrapped DEK, identity version.
    (P, upload id, part:05d)      `Part`: where the part's stripe lives, its ETag/checksums.

and the two request-side shapes `MultipartService` takes: `UploadOptions` at Create and a
`ListedPart` per entry of Complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage.objects import ObjectAttributes
from storage.records import ObjectVersion, PartLayout, Record


@dataclass
class Upload(Record):
    bucket: str
    key: str
    upload_id: str
    tenant: str
    initiated: float
    identity_version: str
    dek: bytes
    kek_version: int
    content_type: str = "binary/octet-stream"
    user_meta: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    storage_class: str = "STANDARD"
    tags: dict[str, str] = field(default_factory=dict)
    sse: dict[str, str] = field(default_factory=dict)
    checksum_algorithm: str | None = None
    checksum_type: str | None = None
    acl: dict[str, Any] = field(default_factory=dict)
    changes: int = 0  # bumped by every part change, see the module docstring
    lock: dict[str, Any] = field(default_factory=dict)  # Object Lock headers of the create

    def shell(self, version_id: str = "") -> ObjectVersion:
        """An object version carrying the upload's identity and key (the AAD binding): its
        parts are sealed, read back and checked (the deep scrub) under it."""
        return ObjectVersion(bucket=self.bucket, key=self.key, version_id=version_id,
                             tenant=self.tenant, size=0, etag="", last_modified=0.0,
                             dek=self.dek, kek_version=self.kek_version, sse=self.sse,
                             identity_version=self.identity_version)


@dataclass
class Part(Record):
    """An uploaded part's record: a `PartLayout` (where its stripe lives) seen from S3.

    Derived from the layout and back only by `Part.of` and `layout()`. The one difference
    is `size`: here the part's plaintext size (what S3 reports, `PartLayout.plaintext_size`);
    in the layout the bytes its stripe holds (`stored_size` here, when compressed).
    """

    upload_id: str
    number: int
    size: int
    etag: str
    stripe_id: bytes
    k: int
    m: int
    segment_size: int
    nodes: list[str | None]
    profile: str
    modified: float
    checksums: dict[str, str] = field(default_factory=dict)
    compressed: bool = False  # archive profiles compress before encryption
    stored_size: int = 0  # PartLayout.size of a compressed part (0 when not compressed)

    @classmethod
    def of(cls, upload_id: str, layout: PartLayout, etag: str, modified: float) -> Part:
        """The record of `layout` uploaded as part `layout.number` of `upload_id`."""
        return cls(upload_id=upload_id, number=layout.number, size=layout.plaintext_size,
                   etag=etag, stripe_id=layout.stripe_id, k=layout.k, m=layout.m,
                   segment_size=layout.segment_size, nodes=list(layout.nodes),
                   profile=layout.profile, modified=modified,
                   checksums=dict(layout.checksums), compressed=layout.compressed,
                   stored_size=layout.size if layout.compressed else 0)

    def layout(self) -> PartLayout:
        return PartLayout(number=self.number,
                          size=self.stored_size if self.compressed else self.size,
                          etag=self.etag, stripe_id=self.stripe_id, k=self.k, m=self.m,
                          segment_size=self.segment_size, nodes=list(self.nodes),
                          profile=self.profile, checksums=dict(self.checksums),
                          compressed=self.compressed,
                          plain_size=self.size if self.compressed else 0)


@dataclass
class UploadOptions(ObjectAttributes):
    checksum_algorithm: str | None = None
    checksum_type: str | None = None


@dataclass
class ListedPart:
    """One entry of a CompleteMultipartUpload request."""

    number: int
    etag: str
    checksums: dict[str, str] = field(default_factory=dict)
