"""Bucket operations: create, head, list, delete, location, versioning, tagging."""

from __future__ import annotations

from aiohttp import web

from gateway.s3 import authz, xml, xml_parse
from gateway.s3.body import EMPTY_SHA256
from gateway.s3.errors import S3Error
from gateway.s3.handlers import S3Request, clearing_operation, operation, xml_response
from gateway.s3.handlers.access import create_bucket_config
from gateway.s3.handlers.batch import MISSING_DIGEST, read_small_body
from gateway.s3.http import iso_time, strict_int
from gateway.s3.router import validate_bucket_name
from storage.records import Bucket

MAX_XML_BYTES = 1024 * 1024
MAX_BUCKETS_PAGE = 10000


def xml_too_large() -> S3Error:
    return S3Error("MalformedXML", "The XML you provided was too large.")


async def read_xml_body(rq: S3Request, require_digest: str | None = None,
                        limit: int = MAX_XML_BYTES) -> bytes:
    """A small XML request body (at most `limit` bytes), bounded and checked against every
    digest the client sent (the signed payload hash, Content-MD5, x-amz-checksum-*), which
    bind it to the request. A request without any body (CreateBucket with no configuration)
    reads as empty."""
    if rq.request.content_length is not None and rq.request.content_length > limit:
        raise xml_too_large()
    if "Content-Length" not in rq.headers and not rq.request.body_exists:
        mode = rq.auth.payload_mode
        if mode.startswith("sha256:") and mode[7:] != EMPTY_SHA256:
            raise S3Error("XAmzContentSHA256Mismatch")
        return b""
    return await read_small_body(rq, limit, require_digest)


@operation("ListBuckets")
async def list_buckets(rq: S3Request) -> web.StreamResponse:
    """ListBuckets with AWS's paging: `max-buckets`, `continuation-token`, `prefix`,
    `bucket-region` (the token is the last name listed, opaque to clients)."""
    from gateway.s3.handlers.listing import page_token, read_token

    p = rq.params
    raw = p.get("max-buckets")
    limit = MAX_BUCKETS_PAGE
    if raw is not None:
        try:
            limit = strict_int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_BUCKETS_PAGE:
            raise S3Error("InvalidArgument", "Argument max-buckets must be an integer between "
                          f"1 and {MAX_BUCKETS_PAGE}", ArgumentName="max-buckets",
                          ArgumentValue=raw)
    after = read_token(p["continuation-token"]) if "continuation-token" in p else ""
    prefix, region = p.get("prefix", ""), p.get("bucket-region")
    buckets = [b for b in await rq.cluster.buckets.list(rq.tenant)
               if b.name > after and b.name.startswith(prefix)
               and (region is None or b.region == region)]
    page, more = buckets[:limit], len(buckets) > limit
    owner_id, owner_name = await rq.cluster.tenants.identity(rq.tenant)
    # AWS: each bucket's BucketRegion "if the request contains at least one valid parameter"
    paged = any(k in p for k in ("max-buckets", "continuation-token", "prefix", "bucket-region"))
    return xml_response(xml.list_buckets_xml(
        owner_id, owner_name,
        [(b.name, iso_time(b.created), b.region if paged else None) for b in page],
        prefix=p.get("prefix"), continuation=page_token(page[-1].name) if more else None))


NAMESPACE_HEADER = "x-amz-bucket-namespace"


def _check_namespace(value: str | None) -> None:
    """x-amz-bucket-namespace: `global` is the one namespace here; an account-regional
    bucket (named with the account and region, `-an`) is not offered: 501, never a global
    bucket made in its place."""
    if value is None or value == "global":
        return
    if value == "account-regional":
        raise S3Error("NotImplemented", Header=NAMESPACE_HEADER)
    raise S3Error("InvalidArgument", f"Invalid {NAMESPACE_HEADER} header",
                  ArgumentName=NAMESPACE_HEADER, ArgumentValue=value)


def _refuse_repeat_settings(b: Bucket, tags: object, locked: bool,
                            access: dict[str, object]) -> None:
    """A repeated create by the owner resets only the ACL (all AWS documents); Tags, Object
    Lock or Object Ownership asked of it that the bucket does not already have would be
    dropped, so it is 409 BucketAlreadyOwnedByYou naming them, never a 200 that leaves them
    unapplied. Asking again for what the bucket already has stays a 200 (an idempotent
    "ensure this bucket" step re-sends its whole create)."""
    lock_on = bool((b.config.get("object_lock") or {}).get("enabled"))
    mode = access.get("ownership")
    extra = [name for name, differs in (
        ("CreateBucketConfiguration Tags", bool(tags) and tags != b.config.get("tagging")),
        ("x-amz-bucket-object-lock-enabled", locked and not lock_on),
        ("x-amz-object-ownership", mode is not None and mode != authz.ownership(b)))
        if differs]
    if extra:
        raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named "
                      "bucket succeeded and you already own it; a repeated create resets only "
                      f"the bucket ACL and cannot apply {', '.join(extra)}.")


@operation("CreateBucket")
async def create_bucket(rq: S3Request) -> web.StreamResponse:
    validate_bucket_name(rq.bucket)
    _check_namespace(rq.headers.get(NAMESPACE_HEADER))
    body = await read_xml_body(rq)
    asked = xml_parse.parse_create_bucket(body)
    region = asked.region
    if region and region != rq.cfg.region:
        raise S3Error("IllegalLocationConstraintException",
                      f"The {region} location constraint is incompatible for the region "
                      "specific endpoint this request was sent to.")
    from storage.errors import BucketExists

    locked = rq.headers.get("x-amz-bucket-object-lock-enabled", "").strip().lower() == "true"
    access = await create_bucket_config(rq)
    config: dict[str, object] = {"tagging": asked.tags} if asked.tags else {}
    if locked:  # Object Lock at creation turns versioning on for good (storage/object_lock.py)
        config["object_lock"] = {"enabled": True, "rule": None}
    try:
        await rq.cluster.buckets.create(
            rq.tenant, rq.bucket, region or rq.cfg.region,
            versioning="Enabled" if locked else "", config=config or None,
            owner=await rq.cluster.tenants.record(rq.tenant))  # cached by the auth check
    except BucketExists as exc:
        if exc.owned_by_caller and rq.cfg.region == "us-east-1":
            # us-east-1 answers 200 to a repeated create by the owner and resets the bucket
            # ACL (AWS's legacy behaviour, documented under CreateBucket); what else such a
            # create would do to the bucket AWS does not say, so asking for more is refused
            _refuse_repeat_settings(await rq.cluster.buckets.get(rq.tenant, rq.bucket),
                                    asked.tags, locked, access)
            await rq.cluster.buckets.update(rq.tenant, rq.bucket, acl=access["acl"])
            return web.Response(status=200, headers={"Location": f"/{rq.bucket}"})
        raise
    if any(access.values()):
        await rq.cluster.buckets.update(rq.tenant, rq.bucket, **access)
    return web.Response(status=200, headers={"Location": f"/{rq.bucket}"})


@operation("HeadBucket")
async def head_bucket(rq: S3Request) -> web.StreamResponse:
    b = rq.existing_bucket()
    return web.Response(status=200, headers={"x-amz-bucket-region": b.region})


@operation("DeleteBucket")
async def delete_bucket(rq: S3Request) -> web.StreamResponse:
    """An empty bucket is deleted with its uploads in progress (aborted), as S3 does."""
    from gateway.s3.handlers.multipart import service

    b = rq.existing_bucket()
    await rq.cluster.buckets.ensure_empty(b)
    await service(rq).abort_all(b)
    await rq.cluster.buckets.delete(b)
    return web.Response(status=204)


@operation("GetBucketLocation")
async def get_location(rq: S3Request) -> web.StreamResponse:
    b = rq.existing_bucket()
    return xml_response(xml.location_xml(b.region))


@operation("GetBucketVersioning")
async def get_versioning(rq: S3Request) -> web.StreamResponse:
    b = rq.existing_bucket()
    return xml_response(xml.versioning_xml(b.versioning or None))


@operation("PutBucketVersioning")
async def put_versioning(rq: S3Request) -> web.StreamResponse:
    status = xml_parse.parse_versioning(await read_xml_body(rq))
    rq.existing_bucket()

    def check(b: Bucket) -> None:  # on the record the update swaps (another gateway's lock)
        if status == "Suspended" and b.config.get("object_lock"):
            raise S3Error("InvalidBucketState", "An Object Lock configuration is present on "
                          "this bucket, so the versioning state cannot be changed.")

    await rq.cluster.buckets.update(rq.tenant, rq.bucket, check, versioning=status)
    return web.Response(status=200)


@operation("GetBucketTagging")
async def get_bucket_tagging(rq: S3Request) -> web.StreamResponse:
    b = rq.existing_bucket()
    tags = b.config.get("tagging")
    if not tags:
        raise S3Error("NoSuchTagSet", BucketName=rq.bucket)
    return xml_response(xml.tagging_xml(tags))


@operation("PutBucketTagging")
async def put_bucket_tagging(rq: S3Request) -> web.StreamResponse:
    tags = xml_parse.parse_tagging(await read_xml_body(rq, MISSING_DIGEST),
                                   max_tags=xml_parse.BUCKET_TAGS_MAX)
    await rq.cluster.buckets.update(rq.tenant, rq.bucket, tagging=tags)
    return web.Response(status=204)


clearing_operation("DeleteBucketTagging", "tagging")
