"""RestoreObject (`POST /key?restore`) and the archive rules of GET/HEAD.

AWS behaviour: 202 when a restore is accepted (or upgraded to a faster tier), 200 when the
object is already restored (the expiry is recomputed from now), 409
RestoreAlreadyInProgress while one runs, 403 InvalidObjectState for an object not in
GLACIER/DEEP_ARCHIVE, 503 GlacierExpeditedRetrievalNotAvailable for Expedited on
DEEP_ARCHIVE. HEAD and GET show `x-amz-restore` once a restore was requested; GET of an
archived object that is not restored is 403 InvalidObjectState.
"""

from __future__ import annotations

from aiohttp import web

from gateway.s3.errors import S3Error
from gateway.s3.handlers import S3Request, operation
from gateway.s3.http import http_date
from gateway.s3.xml_parse import find_all, find_text, only_children, parse_document, parse_int
from storage import archive, archive_classes
from storage.records import ObjectVersion

RESTORE_DAYS_MAX = 2147483647


def restore_status(v: ObjectVersion) -> tuple[bool, float | None] | None:
    """(in progress, expiry of the restored copy) of an archived version a restore was
    requested for, or None: no restore under way and no restored copy alive."""
    if not archive_classes.is_archived(v):
        return None
    if v.restore.get("state") == "ongoing":
        return True, None
    if archive_classes.restored_now(v):
        return False, float(v.restore["expiry"])
    return None


def restore_headers(v: ObjectVersion) -> dict[str, str]:
    """`x-amz-restore` as AWS writes it (quoted values), when a restore was requested."""
    status = restore_status(v)
    if status is None:
        return {}
    if status[0]:
        return {"x-amz-restore": 'ongoing-request="true"'}
    return {"x-amz-restore": f'ongoing-request="false", expiry-date="{http_date(status[1] or 0)}"'}


def readable_version(v: ObjectVersion) -> ObjectVersion:
    """The version a GET streams; 403 InvalidObjectState for an archived, unrestored one."""
    out = archive_classes.readable(v)
    if out is None:
        raise S3Error("InvalidObjectState", StorageClass=v.storage_class)
    return out


def _parse(body: bytes) -> tuple[int, str]:
    root = parse_document(body, "RestoreRequest")
    only_children(root, ("Days", "GlacierJobParameters", "Type", "Tier", "Description",
                         "SelectParameters", "OutputLocation"))
    # a SELECT restore (Type, SelectParameters, OutputLocation: AWS's select job, which
    # takes no Days) is not implemented: refused whichever of its elements comes, never
    # run as a plain restore with the query and output location ignored
    if any(find_all(root, name) for name in ("Type", "SelectParameters", "OutputLocation")):
        raise S3Error("NotImplemented", "SELECT restore requests are not implemented")
    days = parse_int(find_text(root, "Days"), "Days", bits=32)
    if days is None:
        raise S3Error("MalformedXML")
    if not 1 <= days <= RESTORE_DAYS_MAX:
        raise S3Error("InvalidArgument", "Days must be a positive integer",
                      ArgumentName="Days", ArgumentValue=str(days))
    tier = find_text(root, "Tier")
    for params in find_all(root, "GlacierJobParameters"):
        only_children(params, ("Tier",))
        tier = find_text(params, "Tier") or tier
    tier = (tier or "Standard").strip()
    if tier not in archive_classes.TIERS:
        raise S3Error("MalformedXML")
    return days, tier


@operation("RestoreObject")
async def restore_object(rq: S3Request) -> web.StreamResponse:
    from gateway.s3.handlers.batch import read_small_body

    days, tier = _parse(await read_small_body(rq))
    vid = rq.version_id
    v = await rq.cluster.objects.head(rq.existing_bucket(), rq.key, vid)
    if v.delete_marker:
        if vid is not None:
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against "
                          "this resource.", headers={"Allow": "DELETE"})
        raise S3Error("NoSuchKey", Key=rq.key)
    svc = rq.cluster.archive
    try:
        outcome, _ = await svc.request_restore(rq.existing_bucket(), rq.key, v.version_id,
                                               days, tier)
    except archive.NotArchived:
        raise S3Error("InvalidObjectState", "Restore is not allowed for the object's current "
                      "storage class", StorageClass=v.storage_class) from None
    except archive.RestoreInProgress:
        raise S3Error("RestoreAlreadyInProgress") from None
    except archive.ExpeditedUnavailable:
        raise S3Error("GlacierExpeditedRetrievalNotAvailable", "Glacier expedited retrievals "
                      "are currently not available, please try again later.",
                      status=503) from None
    return web.Response(status=outcome.value)
