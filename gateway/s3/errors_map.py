"""The one place that decides which S3 error a library error becomes."""

from __future__ import annotations

import logging

from aiohttp.web_protocol import RequestPayloadError

from gateway.s3.errors import S3Error
from gateway.s3.headlimit import PARSE_ERROR
from gateway.s3.sigv4_fields import SigV4Error
from storage import errors as se
from storage import kms
from storage.conditions import PreconditionFailed
from storage.headguard import payload_error_summary
from storage.lock_clock import ClockUnverified
from storage.object_lock import DeleteLocked

log = logging.getLogger("tessera.gateway")
STORAGE_FULL = "The storage this request writes to is full; retry later."


def to_s3_error(exc: BaseException, bucket: str | None, key: str | None) -> S3Error:
    """Map any exception to the S3Error a client sees; unknown ones become InternalError."""
    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, SigV4Error):
        # a signing-region refusal names the region in a header too (as AWS does): botocore
        # reads it to re-sign a HEAD, whose refusal has no body to carry <Region>
        region = exc.details.get("Region")
        return S3Error(exc.code, exc.message, exc.status, **exc.details,
                       headers={"x-amz-bucket-region": region} if region and bucket else None)
    if isinstance(exc, se.BucketNotFound):
        return S3Error("NoSuchBucket", BucketName=exc.bucket)
    if isinstance(exc, se.ObjectNotFound):
        if exc.version_id is not None:
            return S3Error("NoSuchVersion", Key=exc.key, VersionId=exc.version_id)
        return S3Error("NoSuchKey", Key=exc.key)
    if isinstance(exc, se.BucketExists):
        code = "BucketAlreadyOwnedByYou" if exc.owned_by_caller else "BucketAlreadyExists"
        return S3Error(code, BucketName=exc.bucket)
    if isinstance(exc, se.BucketNotEmpty):
        return S3Error("BucketNotEmpty", BucketName=exc.bucket)
    if isinstance(exc, se.BucketBusy):
        return S3Error("OperationAborted")
    if isinstance(exc, DeleteLocked):  # AWS's words for deletes (moto's aws-verified tests,
        # aws CLI output); none known for its other lock refusals: plain "Access Denied"
        return S3Error("AccessDenied", "Access Denied because object protected by object lock.")
    if isinstance(exc, se.AccessDenied):
        return S3Error("AccessDenied")
    if isinstance(exc, se.InvalidRange):
        return S3Error("InvalidRange", ActualObjectSize=str(exc.size))
    if isinstance(exc, kms.KmsNotFound):  # an SSE-KMS object whose key was deleted
        return S3Error("KMS.NotFoundException", str(exc), status=400)
    if isinstance(exc, kms.KmsDisabled):
        return S3Error("KMS.DisabledException", str(exc), status=400)
    if isinstance(exc, kms.KmsInvalidState):
        return S3Error("KMS.KMSInvalidStateException", str(exc), status=400)
    if isinstance(exc, se.TenantDeleting):  # a cut-short `tenant delete` (AWS: a closed
        # account's requests are AccessDenied): its own keys no longer authenticate
        # (`TenantService.credential`); what another account was granted reads, writes nothing
        return S3Error("AccessDenied", "The account that owns this is being deleted; its "
                       "objects can be read but nothing is written.")
    if isinstance(exc, se.KeyUnavailable):
        return S3Error("AccessDenied", "The encryption key of this object is no longer "
                       "available.")
    if isinstance(exc, se.TenantShredding):  # its shred gives up on a lock, or goes ahead
        return S3Error("ServiceUnavailable", "The owner of this bucket is being shredded; "
                       "writes are refused until that ends. Retry later.")
    if isinstance(exc, se.QuorumNotReached) and exc.full:  # nodes answer, but have no room
        log.error("write refused, storage nodes full: %s", exc)
        return S3Error("ServiceUnavailable", STORAGE_FULL)
    if isinstance(exc, se.QuorumNotReached | se.DataUnavailable):
        log.error("storage unavailable: %s", exc)
        return S3Error("ServiceUnavailable", "Too few storage nodes are reachable to serve "
                       "this request; retry later.")
    if isinstance(exc, se.IntegrityError):  # no k shards of a segment authenticate
        log.error("stored data failed verification: %s", exc)
        return S3Error("ServiceUnavailable", "Too few intact copies of this object's data "
                       "could be read; retry later.")
    if isinstance(exc, se.StorageFull):  # retried by SDKs; writes resume once space is freed
        log.error("write refused: %s", exc)
        return S3Error("ServiceUnavailable", STORAGE_FULL)
    if isinstance(exc, ClockUnverified):  # too few nodes answer to vouch for the time
        log.error("object lock: %s", exc)
        return S3Error("ServiceUnavailable", "Too few storage nodes answer to judge this "
                       "object's retention now; retry later.")
    if isinstance(exc, se.NodeRemoved):  # the commit named a node removed meanwhile
        log.warning("write not committed: %s", exc)
        return S3Error("ServiceUnavailable", "A storage node this write was placed on was "
                       "removed from the cluster meanwhile; retry.")
    if isinstance(exc, se.WriteExpired):
        return S3Error("RequestTimeout")
    if isinstance(exc, se.Overloaded):
        return S3Error("SlowDown", str(exc))
    if isinstance(exc, se.InvalidInput):
        return S3Error("InvalidArgument", str(exc))
    if isinstance(exc, RequestPayloadError):
        # The body's HTTP framing (chunked transfer coding) broke after its head was parsed:
        # the client's error, answered as a head the parser refuses is (400 BadRequest), in
        # one line without the bytes the parser quotes.
        log.warning("refused a request body with broken framing on %s/%s: %s", bucket, key,
                    payload_error_summary(exc))
        return S3Error("BadRequest", PARSE_ERROR)
    if isinstance(exc, PreconditionFailed):
        return S3Error("PreconditionFailed", Condition=exc.condition)
    if isinstance(exc, se.Conflict):
        return S3Error("PreconditionFailed", Condition="If-Match")
    log.exception("internal error on %s/%s", bucket, key, exc_info=exc)
    return S3Error("InternalError")
