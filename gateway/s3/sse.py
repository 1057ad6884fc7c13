"""Server-side encryption headers of S3: SSE-S3, SSE-KMS and SSE-C, as AWS reports them.

Everything is always encrypted (tenant KEK -> per-version DEK); these headers choose what is
reported and, for SSE-C, add the customer's key as an extra wrapping of the DEK.

SSE-KMS names one of the requesting tenant's named KMS keys (`storage.kms`: key id, key ARN,
alias name or alias ARN; none: the tenant's default key `alias/aws/s3`); the key wraps the
object's data key and responses give its ARN, as AWS does. The requesting tenant is the
signer, also when it writes into another tenant's bucket under a grant: AWS resolves a key
id, an alias and the default aws/s3 key in the requester's account (a bucket default
included), so such an object is sealed with the writer's own key, which the bucket owner
cannot use (`refuse_foreign_kms`); a bucket default naming the owner's key by ARN is the
owner's key, which the writer may not use (no key policies here). A name that is malformed or names
no key of the tenant is 400 KMS.NotFoundException with AWS KMS's message; another account's
(tenant's) key ARN is AccessDenied, as AWS answers a key you may not use. As AWS, an SSE-KMS or
SSE-C object (or part) has an opaque ETag, not the MD5 of its data (`storage.objects.
etag_hides_md5`); SSE-S3 and plaintext keep the MD5.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from gateway.s3.acl import owner_of
from gateway.s3.errors import S3Error
from storage import kms
from storage.crypto.md5 import md5 as new_md5
from storage.datakeys import (
    KMS_CONTEXT,
    KMS_KEY,
    SSEC_HMAC,
    customer_key_matches,
)
from storage.errors import InvalidInput
from storage.multipart_records import Upload
from storage.records import KMS_TENANT, ObjectVersion

H_SSE = "x-amz-server-side-encryption"
H_KMS_KEY = "x-amz-server-side-encryption-aws-kms-key-id"
H_BUCKET_KEY = "x-amz-server-side-encryption-bucket-key-enabled"
H_CONTEXT = "x-amz-server-side-encryption-context"
H_C_ALG = "x-amz-server-side-encryption-customer-algorithm"
H_C_KEY = "x-amz-server-side-encryption-customer-key"
H_C_MD5 = "x-amz-server-side-encryption-customer-key-MD5"
COPY_PREFIX = "x-amz-copy-source-"


@dataclass
class SseChoice:
    """What a write asked for: the record kept in ObjectVersion.sse, and an SSE-C key."""

    record: dict[str, str] = field(default_factory=lambda: {"algorithm": "AES256"})
    customer_key: bytes | None = None
    kms_ref: str | None = None  # SSE-KMS: the key name given (None: the default key)


def kms_error(exc: kms.KmsNotFound | kms.KmsAccessDenied | kms.KmsDisabled
              | kms.KmsInvalidState, ref: str | None) -> S3Error:
    """The S3 error for a KMS key a request may not use."""
    if isinstance(exc, kms.KmsNotFound):
        return S3Error("KMS.NotFoundException", str(exc), status=400)
    if isinstance(exc, kms.KmsDisabled):
        return S3Error("KMS.DisabledException", str(exc), status=400)
    if isinstance(exc, kms.KmsInvalidState):
        return S3Error("KMS.KMSInvalidStateException", str(exc), status=400)
    return S3Error("AccessDenied", "User is not authorized to perform kms:GenerateDataKey on "
                   f"resource {ref}")


def customer_key(headers: Any, prefix: str = "") -> bytes | None:
    """The SSE-C key of a request (or of its copy source with `prefix`), checked as AWS does."""
    names = [h.replace("x-amz-", prefix, 1) if prefix else h for h in (H_C_ALG, H_C_KEY, H_C_MD5)]
    h_alg, h_key, h_md5 = names
    alg, key, md5 = (headers.get(n) for n in names)
    if alg is None and key is None and md5 is None:
        return None
    if alg is None:
        raise S3Error("InvalidArgument", "Requests specifying Server Side Encryption with "
                      "Customer provided keys must provide a valid encryption algorithm.",
                      ArgumentName=h_alg, ArgumentValue="null")
    if alg != "AES256":
        raise S3Error("InvalidEncryptionAlgorithmError", "The Encryption request you specified "
                      "is not valid. Supported value: AES256.",
                      ArgumentName=h_alg, ArgumentValue=alg)
    if key is None:
        raise S3Error("InvalidArgument", "Requests specifying Server Side Encryption with "
                      "Customer provided keys must provide an appropriate secret key.",
                      ArgumentName=h_key, ArgumentValue="null")
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise S3Error("InvalidArgument", "The secret key was invalid for the specified "
                      "algorithm.", ArgumentName=h_key, ArgumentValue="null")
    if md5 is None:
        raise S3Error("InvalidArgument", "Requests specifying Server Side Encryption with "
                      "Customer provided keys must provide the client calculated MD5 of the "
                      "secret key.", ArgumentName=h_md5, ArgumentValue="null")
    if base64.b64encode(new_md5(raw).digest()).decode() != md5:
        raise S3Error("InvalidArgument", "The calculated MD5 hash of the key did not match the "
                      "hash that was provided.", ArgumentName=h_md5,
                      ArgumentValue="null")
    return raw


def for_write(headers: Any, tenant: str, region: str,
              bucket_default: dict[str, Any] | None = None) -> SseChoice:
    """The encryption a PUT, Copy or CreateMultipartUpload asks for (or the bucket default)."""
    ckey = customer_key(headers)
    alg = headers.get(H_SSE)
    kms_id = headers.get(H_KMS_KEY)
    if ckey is not None:
        if alg is not None or kms_id is not None or H_CONTEXT in headers:
            raise S3Error("InvalidArgument", "Server Side Encryption with Customer provided key "
                          "is incompatible with the encryption method specified",
                          ArgumentName=H_SSE, ArgumentValue=alg or "null")
        md5 = base64.b64encode(new_md5(ckey).digest()).decode()
        return SseChoice({"algorithm": "SSE-C", "customer_algorithm": "AES256",
                          "customer_key_md5": md5}, ckey)
    if alg is None and bucket_default:
        alg = bucket_default.get("algorithm", "AES256")
        kms_id = (bucket_default.get("kms_key_id") or None) if kms_id is None else kms_id
    if alg is None:  # an empty header names no method: refused below, not taken as AES256
        alg = "AES256"  # (s3:x-amz-server-side-encryption judges the header as sent)
    if alg == "AES256":
        if H_CONTEXT in headers:
            raise S3Error("InvalidArgument", "Server Side Encryption with AWS KMS managed key "
                          "requires HTTP header x-amz-server-side-encryption : aws:kms",
                          ArgumentName=H_CONTEXT, ArgumentValue=headers[H_CONTEXT])
        if kms_id is not None and H_KMS_KEY in headers:
            raise S3Error("InvalidArgument", "Server Side Encryption with AWS KMS managed key "
                          "requires HTTP header x-amz-server-side-encryption : aws:kms",
                          ArgumentName=H_KMS_KEY, ArgumentValue=kms_id)
        return SseChoice({"algorithm": "AES256"})
    if alg in ("aws:kms", "aws:kms:dsse"):
        if kms_id is not None:  # an empty one names no key: refused, not the default key
            try:
                kms.parse_key_ref(kms_id)
            except kms.KmsNotFound as exc:
                raise kms_error(exc, kms_id) from None
        rec = {"algorithm": alg}
        ctx = headers.get(H_CONTEXT)
        if ctx is not None:
            try:
                kms.canonical_context(ctx)
            except InvalidInput as exc:
                raise S3Error("InvalidArgument", f"Invalid {H_CONTEXT}: {exc}",
                              ArgumentName=H_CONTEXT, ArgumentValue=ctx) from None
            rec[KMS_CONTEXT] = ctx
        bke = headers.get(H_BUCKET_KEY)
        if (bke.lower() == "true" if bke is not None
                else bool(bucket_default and bucket_default.get("bucket_key_enabled"))):
            rec["bucket_key_enabled"] = "true"
        return SseChoice(rec, kms_ref=kms_id or None)
    raise S3Error("InvalidArgument", "The encryption method specified is not supported",
                  ArgumentName=H_SSE, ArgumentValue=alg)


def response_headers(sse: dict[str, str], context: bool = False) -> dict[str, str]:
    """Encryption headers of PUT/GET/HEAD/Copy/multipart responses, as AWS writes them; with
    `context` (PUT, Copy, CreateMultipartUpload) the SSE-KMS encryption context too."""
    alg = sse.get("algorithm", "AES256")
    if alg == "SSE-C":
        return {H_C_ALG: sse.get("customer_algorithm", "AES256"),
                H_C_MD5: sse.get("customer_key_md5", "")}
    out = {H_SSE: alg}
    if alg.startswith("aws:kms"):
        out[H_KMS_KEY] = sse.get("kms_key_id", "")
        if sse.get("bucket_key_enabled") == "true":
            out[H_BUCKET_KEY] = "true"
        if context and sse.get(KMS_CONTEXT):
            out[H_CONTEXT] = sse[KMS_CONTEXT]
    return out


def is_customer(v: ObjectVersion) -> bool:
    return SSEC_HMAC in v.sse


def key_for_read(headers: Any, v: ObjectVersion, prefix: str = "") -> bytes | None:
    """Check a GET/HEAD's (or copy source's) SSE-C headers against the stored version.

    Missing key -> 400 InvalidRequest; wrong key -> 403 AccessDenied; SSE-C headers on an
    object not stored with SSE-C -> 400 InvalidRequest, as AWS answers each case.
    """
    ckey = customer_key(headers, prefix)
    if not is_customer(v):
        if ckey is not None:
            raise S3Error("InvalidRequest", "The encryption parameters are not applicable to "
                          "this object.")
        return None
    if ckey is None:
        raise S3Error("InvalidRequest", "The object was stored using a form of Server Side "
                      "Encryption. The correct parameters must be provided to retrieve the "
                      "object.")
    if not customer_key_matches(v, ckey):
        raise S3Error("AccessDenied")
    return ckey


def refuse_foreign_kms(requester: str | None, v: ObjectVersion | Upload) -> None:
    """Reading an SSE-KMS object's bytes (GET, a copy source), or adding to an SSE-KMS
    upload (a part, the completion: AWS asks kms:Decrypt of them), uses the KMS key of
    the tenant that wrote it (`records.kms_owner`), which no policy here grants to another
    account or to anonymous requests: 403 AccessDenied, as AWS answers without kms:Decrypt
    (its AWS managed key aws/s3 is never usable across accounts; a customer managed key only
    through a key policy, which this service has not), the bucket owner included when a
    writer under a grant sealed it with its own key. HEAD and the metadata operations
    decrypt nothing: not refused. (A version written under a grant before s22 is sealed
    with the bucket owner's key: its writer, the ACL owner, reads it back too.)"""
    if not v.sse.get(KMS_KEY):
        return
    allowed = (v.sse[KMS_TENANT],) if v.sse.get(KMS_TENANT) else (v.tenant, owner_of(v))
    if requester not in allowed:
        raise S3Error("AccessDenied")


def refuse_blocked(default: dict[str, Any] | None, ckey: bytes | None) -> None:
    """BlockedEncryptionTypes: a write that specifies SSE-C (PutObject, CopyObject, POST,
    CreateMultipartUpload, UploadPart, UploadPartCopy) into a bucket blocking it is 403
    AccessDenied, as AWS documents, even for an upload begun before the block; existing SSE-C
    objects stay readable (reads never come here)."""
    if ckey is not None and "SSE-C" in (default or {}).get("blocked", ()):
        raise S3Error("AccessDenied")


async def for_request(rq: Any) -> SseChoice:
    """`for_write` for an S3Request, with its bucket's default encryption (from the record
    the pipeline read), and the KMS key of an SSE-KMS write looked up in the tenant's keys
    (recorded by id and ARN)."""
    b = rq.existing_bucket()
    default = b.config.get("encryption")
    choice = for_write(rq.headers, rq.tenant, rq.cfg.region, default)
    refuse_blocked(default, choice.customer_key)
    if choice.record.get("algorithm", "").startswith("aws:kms"):
        svc = rq.cluster.objects.kms
        signer = rq.requester or rq.tenant  # (anonymous: the bucket owner's, as before)
        try:
            key = await svc.resolve(signer, choice.kms_ref)
        except (kms.KmsNotFound, kms.KmsAccessDenied, kms.KmsDisabled,
                kms.KmsInvalidState) as exc:
            raise kms_error(exc, choice.kms_ref) from None
        choice.record.update({"kms_key_id": svc.arn(key), KMS_KEY: key.key_id})
        if signer != rq.tenant:
            choice.record[KMS_TENANT] = signer
    return choice
