"""Data keys: each object version's data key (DEK), how it is wrapped, and the ETag it implies.

A version's DEK is wrapped by its tenant's KEK and, first, by an SSE-C customer key (of which
only a salted HMAC is kept) or by its SSE-KMS key (or S3 Bucket Key). The same key decides
whether the ETag may be the MD5 of the data (SSE-S3, plaintext) or must be opaque (SSE-C,
SSE-KMS). Everything here is bound to the version's identity (tenant, bucket, key, version).
"""

from __future__ import annotations

import hmac
import secrets

from storage.crypto import keys
from storage.crypto.aead import KEY_BYTES, SegmentCipher
from storage.errors import KeyUnavailable
from storage.kms import KmsService, canonical_context
from storage.records import ObjectVersion, kms_owner
from storage.shared_memo import derived
from storage.tenants import TenantService

SSEC_HMAC = "customer_key_hmac"  # in ObjectVersion.sse: the DEK is also wrapped by an SSE-C key
SSEC_SALT = "customer_key_salt"
KMS_KEY = "kms_key"  # in ObjectVersion.sse: the id of the KMS key that also wraps the DEK
KMS_CONTEXT = "kms_context"  # in ObjectVersion.sse: the request's encryption context (base64)
def etag_hides_md5(sse: dict[str, str]) -> bool:
    """Whether an object (or part) written under this encryption gets an opaque ETag.

    AWS: an object created by PUT, POST or Copy under SSE-S3 (or plaintext) has the MD5 of
    its data as ETag; under SSE-KMS or SSE-C "an ETag that is not an MD5 digest of the object
    data" (and so are its multipart parts'). An MD5 would let anyone who can list the bucket
    confirm a guess of the content without the key. The opaque ETag is `keys.opaque_etag`
    (`etag_for`).
    """
    alg = sse.get("algorithm", "AES256")
    return alg == "SSE-C" or alg.startswith("aws:kms")


def kms_context(v: ObjectVersion) -> str:
    """The canonical encryption context an SSE-KMS version's DEK wrapping is bound to."""
    raw = v.sse.get(KMS_CONTEXT)
    return canonical_context(raw) if raw else ""


def identity(v: ObjectVersion) -> str:
    """The identity a version's key wrappings and segment AAD are bound to."""
    return keys.object_identity(v.tenant, v.bucket, v.key, v.identity_version or v.version_id)


def customer_key_matches(v: ObjectVersion, sse_c_key: bytes) -> bool:
    """Whether `sse_c_key` is the SSE-C key `v` was written with (by its salted HMAC)."""
    want = v.sse.get(SSEC_HMAC, "")
    got = keys.ssec_key_hmac(sse_c_key, bytes.fromhex(v.sse.get(SSEC_SALT, "")))
    return hmac.compare_digest(want, got)


def etag_for(v: ObjectVersion, md5_hex: str, sse_c_key: bytes | None,
             kms_wrapping: bytes | None) -> str:
    """The ETag of a single-part object (or a part) of `v` whose data has MD5 `md5_hex`:
    that MD5, or under SSE-KMS / SSE-C the opaque ETag keyed by the key that wraps the
    data key (`etag_hides_md5`)."""
    if not etag_hides_md5(v.sse):
        return md5_hex
    key = sse_c_key if SSEC_HMAC in v.sse or v.sse.get("algorithm") == "SSE-C" else kms_wrapping
    assert key is not None, "an SSE-KMS or SSE-C write without its key"
    return keys.opaque_etag(key, v.tenant, md5_hex)


class DataKeys:
    """Seals and opens versions' data keys with their tenant's KEK and SSE-C / KMS keys."""

    def __init__(self, tenants: TenantService, kms: KmsService) -> None:
        self._tenants = tenants
        self._kms = kms

    async def cipher_for(self, v: ObjectVersion, sse_c_key: bytes | None = None,
                         ) -> SegmentCipher:
        """The segment cipher of a version (or upload shell), unwrapping its data key."""
        _, kek = await self._tenants.kek(v.tenant, v.kek_version)  # asked every time: a
        # shred stops reads within TenantService's bound, a memo below notwithstanding
        if sse_c_key is None and SSEC_HMAC not in v.sse and not v.sse.get(KMS_KEY):
            # SSE-S3: the KEK alone opens the DEK; once per shared version and KEK
            return derived(v, ("cipher", kek), lambda: SegmentCipher(
                keys.unwrap_dek(kek, v.tenant, identity(v), v.dek)))
        dek = keys.unwrap_dek(kek, v.tenant, identity(v), v.dek)
        if SSEC_HMAC in v.sse:
            if sse_c_key is None or not customer_key_matches(v, sse_c_key):
                raise KeyUnavailable("this object needs its customer-provided key")
            dek = keys.unwrap_ssec(sse_c_key, v.tenant, identity(v), dek)
        elif v.sse.get(KMS_KEY) and len(dek) != KEY_BYTES:
            # KMS-wrapped (a bare 32-byte key: a copy re-encrypted by the archive tier).
            wrapping = await self.kms_wrapping_for(v)
            assert wrapping is not None
            dek = keys.unwrap_kms(wrapping, v.tenant, v.sse[KMS_KEY], identity(v), dek,
                                  kms_context(v))
        return SegmentCipher(dek)

    async def kms_wrapping_for(self, v: ObjectVersion) -> bytes | None:
        """The KMS key (or S3 Bucket Key) that wraps an SSE-KMS version's DEK; None if none."""
        key_id = v.sse.get(KMS_KEY)
        if not key_id:
            return None
        bucket = v.bucket if v.sse.get("bucket_key_enabled") == "true" else None
        return await self._kms.wrapping_key(kms_owner(v), key_id, bucket)

    @staticmethod
    def seal_dek(v: ObjectVersion, kek: bytes, dek: bytes, sse_c_key: bytes | None,
                 kms_wrapping: bytes | None = None) -> None:
        """Store `dek` in `v` wrapped by the KEK, and first by an SSE-C key or by the
        version's KMS key (`kms_wrapping`, from `kms_wrapping_for`) if one is given.

        For SSE-C only a salted HMAC of the customer key is kept (in `v.sse`), to tell a
        wrong key from a missing one; shredding the tenant's KEK still destroys the object.
        """
        inner = dek
        if sse_c_key is not None:
            salt = secrets.token_bytes(16)
            v.sse = {**v.sse, SSEC_SALT: salt.hex(),
                     SSEC_HMAC: keys.ssec_key_hmac(sse_c_key, salt)}
            inner = keys.wrap_ssec(sse_c_key, v.tenant, identity(v), dek)
        elif kms_wrapping is not None:
            inner = keys.wrap_kms(kms_wrapping, v.tenant, v.sse[KMS_KEY], identity(v), dek,
                                  kms_context(v))
        v.dek = keys.wrap_dek(kek, v.tenant, identity(v), inner)
