"""CopyObject, and the copy-source parsing and preconditions UploadPartCopy shares.

Data is always re-encrypted: segment AAD binds the destination's identity, so a copy reads
the source's plaintext as a stream and writes a new version (bounded memory, any size up
to AWS's 5 GiB copy limit).
"""

from __future__ import annotations

from typing import NamedTuple

from aiohttp import web

from gateway.s3 import authz, checksums, sse, xml
from gateway.s3.context import resolve_bucket
from gateway.s3.copy_source import HEADER, parse_copy_source
from gateway.s3.errors import S3Error
from gateway.s3.handlers import S3Request, operation, xml_response
from gateway.s3.handlers.access import write_acl
from gateway.s3.handlers.lifecycle_headers import expiration_headers
from gateway.s3.handlers.object_lock import lock_from_headers
from gateway.s3.handlers.objects import WEBSITE_REDIRECT, put_options
from gateway.s3.handlers.tagging import parse_tagging_header
from gateway.s3.http import iso_time, parse_http_date
from gateway.s3.router import Endpoint
from storage.buckets import BucketService
from storage.errors import BucketNotFound
from storage.records import ObjectVersion

COPY_SOURCE_MAX = 5 * 1024**3
# A byte range to copy: UploadPartCopy reads it; AWS's CopyObject documents no such header
# and its answer to one is undocumented, so CopyObject refuses it (501, as Ceph RGW's
# RGWCopyObj did) rather than copy the whole object as if the range were honoured.
COPY_RANGE = "x-amz-copy-source-range"
_SELF_COPY = ("This copy request is illegal because it is trying to copy an object to itself "
              "without changing the object's metadata, storage class, website redirect "
              "location or encryption attributes.")


def _etag_in(header: str, etag: str) -> bool:
    return any(t.strip() == "*" or t.strip().strip('"') == etag for t in header.split(","))


def check_copy_conditions(headers: object, etag: str, last_modified: float) -> None:
    """x-amz-copy-source-if-* as S3 combines them; every failure is 412."""
    get = headers.get  # type: ignore[attr-defined]
    lm = int(last_modified)
    im = get("x-amz-copy-source-if-match")
    inm = get("x-amz-copy-source-if-none-match")
    ius = get("x-amz-copy-source-if-unmodified-since")
    ims = get("x-amz-copy-source-if-modified-since")
    if im is not None and not _etag_in(im, etag):
        raise S3Error("PreconditionFailed", Condition="x-amz-copy-source-If-Match")
    if im is None and ius is not None:
        t = parse_http_date(ius)
        if t is not None and lm > t:
            raise S3Error("PreconditionFailed",
                          Condition="x-amz-copy-source-If-Unmodified-Since")
    if inm is not None and _etag_in(inm, etag):
        raise S3Error("PreconditionFailed", Condition="x-amz-copy-source-If-None-Match")
    if inm is None and ims is not None:
        t = parse_http_date(ims)
        if t is not None and lm <= t:
            raise S3Error("PreconditionFailed",
                          Condition="x-amz-copy-source-If-Modified-Since")


class CopySource(NamedTuple):
    """A copy's source: its version, whether its bucket is versioned, and whether the
    header named a version (`?versionId=`)."""

    version: ObjectVersion
    versioned: bool
    named: bool


async def copy_source(rq: S3Request) -> CopySource:
    """The source version, if the requester may read it (policy and ACLs of the source
    bucket, `gateway.s3.authz`), after its preconditions."""
    bucket, key, vid = parse_copy_source(rq.headers[HEADER])
    src = (rq.bucket_record if bucket == rq.bucket  # a copy within a bucket reads it once
           else await resolve_bucket(rq.cluster, Endpoint("GetObject", bucket, key)))
    owner = await authz.authorize(rq.cluster, rq.request, rq.ep, await authz.requester_of(rq),
                                  src, op="GetObject", bucket=bucket, key=key, version_id=vid,
                                  source=True)
    if src is None:
        raise BucketNotFound(bucket)
    b = BucketService.owned(src, owner)
    v = await rq.cluster.objects.head(b, key, vid)
    if v.delete_marker:
        if vid is not None:
            raise S3Error("InvalidRequest", "The source of a copy request may not "
                          "specifically refer to a delete marker by version id.")
        raise S3Error("NoSuchKey", Key=key)
    check_copy_conditions(rq.headers, v.etag, v.last_modified)
    from gateway.s3.handlers.restore import readable_version

    readable_version(v)  # an archived source must be restored first (403 InvalidObjectState)
    return CopySource(v, bool(b.versioning), vid is not None)


def check_copy_size(size: int) -> None:
    """A CopyObject source, or an UploadPartCopy's range, of `size` bytes: past 5 GiB
    (5 GiB itself is taken) it is 400 InvalidRequest, S3's answer (rclone#2375, s3tar#26
    quote it), before a byte is copied."""
    if size > COPY_SOURCE_MAX:
        raise S3Error("InvalidRequest", "The specified copy source is larger than the "
                      f"maximum allowable size for a copy source: {COPY_SOURCE_MAX}")


def _directive(rq: S3Request, name: str) -> str:
    """COPY or REPLACE, exactly (MinIO's reading): another case is refused, not upper-cased,
    so s3:x-amz-metadata-directive in a policy judges the value the copy applies."""
    value = rq.headers.get(name, "COPY")
    if value not in ("COPY", "REPLACE"):
        what = name.removeprefix("x-amz-").removesuffix("-directive")  # AWS's wording
        raise S3Error("InvalidArgument", f"Unknown {what} directive.",
                      ArgumentName=name, ArgumentValue=value)
    return value


@operation("CopyObject")
async def copy_object(rq: S3Request) -> web.StreamResponse:
    if COPY_RANGE in rq.headers:  # UploadPartCopy's; CopyObject has no partial copy
        raise S3Error("NotImplemented", Header=COPY_RANGE)
    src, src_versioned, named = await copy_source(rq)
    src_key = sse.key_for_read(rq.headers, src, sse.COPY_PREFIX)
    sse.refuse_foreign_kms(rq.requester, src)
    meta_dir = _directive(rq, "x-amz-metadata-directive")
    tag_dir = _directive(rq, "x-amz-tagging-directive")
    opts = put_options(rq)
    opts.acl = await write_acl(rq)
    changes = ("x-amz-storage-class", WEBSITE_REDIRECT, sse.H_SSE, sse.H_KMS_KEY, sse.H_C_ALG)
    # A copy onto itself must change something, unless the source names a version: that is
    # a version restore, a regular copy even of the current version (AWS and MinIO refuse
    # only a source without versionId: versitygw#2418, rustfs#4250, moto#7300).
    same = not named and src.bucket == rq.bucket and src.key == rq.key
    if same and meta_dir == "COPY" and not any(h in rq.headers for h in changes):
        raise S3Error("InvalidRequest", _SELF_COPY)
    check_copy_size(src.size)
    if meta_dir == "COPY":
        opts.content_type = src.content_type
        opts.user_meta = dict(src.user_meta)
        redirect = opts.headers.get(WEBSITE_REDIRECT)  # never copied from the source
        opts.headers = {k: v for k, v in src.headers.items() if k != WEBSITE_REDIRECT}
        if redirect is not None:
            opts.headers[WEBSITE_REDIRECT] = redirect
    opts.lock = await lock_from_headers(rq)
    opts.tags = (parse_tagging_header(rq.headers.get("x-amz-tagging")) if tag_dir == "REPLACE"
                 else dict(src.tags))
    choice = await sse.for_request(rq)  # the target's encryption: request or bucket default
    opts.sse, opts.sse_c_key = choice.record, choice.customer_key
    opts.size_hint = src.size
    alg = (rq.headers.get("x-amz-checksum-algorithm", "").upper()
           or next(iter(src.checksums), checksums.DEFAULT_ALGORITHM))
    running = None
    if alg:
        if alg not in checksums.ALGORITHMS:
            raise S3Error("InvalidRequest", "Checksum algorithm provided is unsupported. "
                          "Please try again with any of the valid types: [CRC32, CRC32C, "
                          "CRC64NVME, SHA1, SHA256]")
        running = checksums.Checksum(alg)
        opts.digests = [running]

    async def finalize(v: ObjectVersion) -> None:
        if running is not None:
            v.checksums = {running.algorithm: running.value()}
            v.checksum_type = "FULL_OBJECT"
            v.parts[0].checksums = dict(v.checksums)

    v = await rq.cluster.objects.put(rq.existing_bucket(), rq.key,
                                     rq.cluster.objects.read(src, sse_c_key=src_key), opts,
                                     finalize)
    headers = dict(sse.response_headers(v.sse, context=True))
    if v.version_id != "null":
        headers["x-amz-version-id"] = v.version_id
    if src_versioned:
        headers["x-amz-copy-source-version-id"] = src.version_id
    headers.update(await expiration_headers(rq, v))
    return xml_response(xml.copy_object_result_xml(v.etag, iso_time(v.last_modified),
                                                   v.checksums or None, v.checksum_type),
                        headers=headers)
