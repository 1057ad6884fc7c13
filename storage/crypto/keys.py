"""The key hierarchy: root key -> per-tenant KEK (versioned) -> per-object-version DEK.

The root key lives behind the `RootKeyProvider` interface; the embedded default is a 0600
key file. Tenant KEKs are stored wrapped by the root key; each DEK is stored wrapped by a
tenant KEK with the object's identity as associated data, so a wrapped DEK cannot be moved
to another object. Rotating a KEK rewraps DEKs; data is never re-encrypted.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from storage.crypto import aead, labels

_LENGTH = struct.Struct(">I").pack
_INT = struct.Struct(">q").pack


def pack_fields(label: bytes, fields: Iterable[str | bytes | int]) -> bytes:
    """Length-prefixed, unambiguous encoding of an identity used as associated data."""
    out = [label]
    for f in fields:
        if isinstance(f, str):
            b = f.encode("utf-8", "surrogateescape")
        elif isinstance(f, int):
            b = _INT(f)
        else:
            b = f
        out += (_LENGTH(len(b)), b)
    return b"".join(out)


class RootKeyProvider(Protocol):
    """A KMS: wraps and unwraps tenant keys. An external KMS implements the same two calls."""

    def wrap(self, key: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes: ...


class FileRootKey:
    """The embedded KMS: a 32-byte root key in a 0600 file, created on first start."""

    def __init__(self, path: Path) -> None:
        self._key = self._load_or_create(path)

    @staticmethod
    def _load_or_create(path: Path) -> bytes:
        if path.exists():
            key = path.read_bytes()
            if len(key) != aead.KEY_BYTES:
                raise ValueError(f"root key file {path} is damaged (expected 32 bytes)")
            return key
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = aead.random_key()
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return key

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        return aead.wrap(self._key, key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        return aead.unwrap(self._key, wrapped, aad)


@dataclass(frozen=True)
class WrappedDek:
    """A data key as stored in a manifest: which KEK version wrapped it, and the blob."""

    kek_version: int
    blob: bytes


def kek_aad(tenant: str, version: int) -> bytes:
    return pack_fields(labels.ROOT_WRAPS_KEK_V1, [tenant, version])


def dek_aad(tenant: str, identity: str) -> bytes:
    return pack_fields(labels.KEK_WRAPS_DEK_V1, [tenant, identity])


def new_kek(root: RootKeyProvider, tenant: str, version: int) -> bytes:
    """Make a fresh tenant KEK and return it wrapped by the root key."""
    return root.wrap(aead.random_key(), kek_aad(tenant, version))


def open_kek(root: RootKeyProvider, tenant: str, version: int, wrapped: bytes) -> bytes:
    return root.unwrap(wrapped, kek_aad(tenant, version))


def new_dek() -> bytes:
    return aead.random_key()


def wrap_dek(kek: bytes, tenant: str, identity: str, dek: bytes) -> bytes:
    return aead.wrap(kek, dek, dek_aad(tenant, identity))


def unwrap_dek(kek: bytes, tenant: str, identity: str, blob: bytes) -> bytes:
    return aead.unwrap(kek, blob, dek_aad(tenant, identity))


def segment_aad(identity: str, part: int, segment: int, last: bool) -> bytes:
    """Binds a segment to its object version (tenant/bucket/key/version), part and position."""
    return pack_fields(labels.SEGMENT_AAD_V1, [identity, part, segment, int(last)])


@functools.lru_cache(maxsize=4096)
def object_identity(tenant: str, bucket: str, key: str, version_id: str) -> str:
    """The string every object-version key binding uses (length-prefixed, so unambiguous)."""
    return pack_fields(b"", [tenant, bucket, key, version_id]).hex()


def wrap_ssec(customer_key: bytes, tenant: str, identity: str, dek: bytes) -> bytes:
    """SSE-C: the customer's key wraps the DEK (the result is then wrapped by the KEK too)."""
    return aead.wrap(customer_key, dek, pack_fields(labels.SSEC_WRAPS_DEK_V1, [tenant, identity]))


def unwrap_ssec(customer_key: bytes, tenant: str, identity: str, blob: bytes) -> bytes:
    return aead.unwrap(customer_key, blob,
                       pack_fields(labels.SSEC_WRAPS_DEK_V1, [tenant, identity]))


def ssec_key_hmac(customer_key: bytes, salt: bytes) -> str:
    """The only trace of an SSE-C key that is stored: a salted, labelled HMAC-SHA256."""
    import hmac

    return hmac.new(salt, labels.SSEC_KEY_HMAC_V1 + customer_key, "sha256").hexdigest()


def opaque_etag(key: bytes, tenant: str, md5_hex: str) -> str:
    """The ETag of an SSE-KMS or SSE-C object or part: a keyed HMAC-SHA256 of its MD5 under
    the KMS (or bucket) key or the customer key, cut to MD5's 16 bytes. It is not the MD5 and
    cannot be checked against a guess of the data without the key; the same data under the
    same key gets the same ETag (a part sent again still matches its first ETag)."""
    import hmac

    return hmac.new(key, pack_fields(labels.OPAQUE_ETAG_V1, [tenant, md5_hex]),
                    "sha256").digest()[:16].hex()


# --- named KMS keys: tenant KEK -> KMS key -> (bucket key) -> DEK -------------------------------


def kms_key_aad(tenant: str, key_id: str, kek_version: int) -> bytes:
    return pack_fields(labels.KEK_WRAPS_KMS_KEY_V1, [tenant, key_id, kek_version])


def new_kms_key(kek: bytes, tenant: str, key_id: str, kek_version: int) -> bytes:
    """Fresh KMS key material, returned wrapped by the tenant's KEK (shredding destroys it)."""
    return seal_kms_key(kek, tenant, key_id, kek_version, aead.random_key())


def seal_kms_key(kek: bytes, tenant: str, key_id: str, kek_version: int, raw: bytes) -> bytes:
    """KMS key material wrapped by KEK version `kek_version` (creation, rotation)."""
    return aead.wrap(kek, raw, kms_key_aad(tenant, key_id, kek_version))


def open_kms_key(kek: bytes, tenant: str, key_id: str, kek_version: int, wrapped: bytes,
                 ) -> bytes:
    return aead.unwrap(kek, wrapped, kms_key_aad(tenant, key_id, kek_version))


def bucket_key(kms_key: bytes, tenant: str, key_id: str, bucket: str) -> bytes:
    """S3 Bucket Key: a per-bucket key derived from a KMS key (HMAC-SHA256), which then wraps
    the bucket's data keys in place of the KMS key itself."""
    import hmac

    return hmac.new(kms_key, pack_fields(labels.KMS_BUCKET_KEY_V1, [tenant, key_id, bucket]),
                    "sha256").digest()


def _kms_dek_aad(tenant: str, key_id: str, identity: str, context: str) -> bytes:
    fields = [tenant, key_id, identity] + ([context] if context else [])
    return pack_fields(labels.KMS_WRAPS_DEK_V1, fields)


def wrap_kms(wrapping: bytes, tenant: str, key_id: str, identity: str, dek: bytes,
             context: str = "") -> bytes:
    """SSE-KMS: the KMS key (or its bucket key) wraps the DEK, bound to the object and to the
    request's encryption context (canonical JSON, as KMS binds it); the result is then wrapped
    by the tenant KEK too, so rotation and shredding work as for every object."""
    return aead.wrap(wrapping, dek, _kms_dek_aad(tenant, key_id, identity, context))


def unwrap_kms(wrapping: bytes, tenant: str, key_id: str, identity: str, blob: bytes,
               context: str = "") -> bytes:
    return aead.unwrap(wrapping, blob, _kms_dek_aad(tenant, key_id, identity, context))
