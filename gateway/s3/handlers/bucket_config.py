"""Bucket configuration subresources: CORS, policy, default encryption, lifecycle, ACLs.

Each configuration is validated (`gateway.s3.config_xml`) and stored in the bucket record's
`config` map in its parsed, plain form: `cors` (rules), `policy` (JSON text), `encryption`,
`lifecycle` (rules, for the lifecycle worker). ACLs and the other access settings are in
`gateway.s3.handlers.access`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.s3 import config_lifecycle, config_xml
from gateway.s3.errors import S3Error
from gateway.s3.handlers import (
    S3Request,
    bucket_setting,
    clearing_operation,
    operation,
    xml_response,
)
from gateway.s3.handlers.access import check_policy_allowed
from gateway.s3.handlers.batch import MISSING_DIGEST, read_small_body
from storage.lifecycle_rules import DEFAULT_MIN_SIZE_MODE, MIN_SIZE_MODES

# --- CORS ----------------------------------------------------------------------------------


def _xml_subresource(name: str, ops: tuple[str, str, str], parse: Any, build: Any,
                     missing: str) -> None:
    """Register Put/Get/Delete of a bucket configuration stored parsed under `name` (its PUT
    needs Content-MD5 or a checksum, as AWS requires for CORS)."""
    put_op, get_op, delete_op = ops

    @operation(put_op)
    async def put(rq: S3Request) -> web.StreamResponse:
        value = parse(await read_small_body(rq, require_digest=MISSING_DIGEST))
        await rq.cluster.buckets.update(rq.tenant, rq.bucket, **{name: value})
        return web.Response(status=200)

    @operation(get_op)
    async def get(rq: S3Request) -> web.StreamResponse:
        return xml_response(build(await bucket_setting(rq, name, missing)))

    clearing_operation(delete_op, name)


_xml_subresource("cors", ("PutBucketCors", "GetBucketCors", "DeleteBucketCors"),
                 config_xml.parse_cors, config_xml.cors_xml, "NoSuchCORSConfiguration")

# --- lifecycle -----------------------------------------------------------------------------

MIN_SIZE_HEADER = "x-amz-transition-default-minimum-object-size"


@operation("PutBucketLifecycleConfiguration")
async def put_bucket_lifecycle(rq: S3Request) -> web.StreamResponse:
    """Store the rules and the TransitionDefaultMinimumObjectSize the request names (the
    header; absent: Tessera's default, echoed back so the client sees what applies)."""
    mode = rq.headers.get(MIN_SIZE_HEADER, DEFAULT_MIN_SIZE_MODE)
    if mode not in MIN_SIZE_MODES:
        raise S3Error("InvalidArgument", f"Invalid {MIN_SIZE_HEADER}: valid values are "
                      f"{', '.join(MIN_SIZE_MODES)}", ArgumentName=MIN_SIZE_HEADER,
                      ArgumentValue=mode)
    rules = config_lifecycle.parse_lifecycle(
        await read_small_body(rq, require_digest=MISSING_DIGEST))
    await rq.cluster.buckets.update(rq.tenant, rq.bucket, lifecycle=rules,
                                    lifecycle_min_size=mode)
    return web.Response(status=200, headers={MIN_SIZE_HEADER: mode})


@operation("GetBucketLifecycleConfiguration")
async def get_bucket_lifecycle(rq: S3Request) -> web.StreamResponse:
    rules = await bucket_setting(rq, "lifecycle", "NoSuchLifecycleConfiguration")
    mode = rq.existing_bucket().config.get("lifecycle_min_size") or DEFAULT_MIN_SIZE_MODE
    return xml_response(config_lifecycle.lifecycle_xml(rules), headers={MIN_SIZE_HEADER: mode})


@operation("DeleteBucketLifecycle")
async def delete_bucket_lifecycle(rq: S3Request) -> web.StreamResponse:
    await rq.cluster.buckets.update(rq.tenant, rq.bucket, lifecycle=None,
                                    lifecycle_min_size=None)
    return web.Response(status=204)


# --- policy --------------------------------------------------------------------------------


@operation("PutBucketPolicy")
async def put_bucket_policy(rq: S3Request) -> web.StreamResponse:
    body = await read_small_body(rq)
    text = config_xml.validate_policy(body)
    await check_policy_allowed(rq, rq.existing_bucket(), text)
    await rq.cluster.buckets.update(rq.tenant, rq.bucket, policy=text)
    return web.Response(status=204)


@operation("GetBucketPolicy")
async def get_bucket_policy(rq: S3Request) -> web.StreamResponse:
    text = await bucket_setting(rq, "policy", "NoSuchBucketPolicy")
    return web.Response(status=200, text=str(text), content_type="application/json")


clearing_operation("DeleteBucketPolicy", "policy")


# --- default encryption --------------------------------------------------------------------


@operation("PutBucketEncryption")
async def put_bucket_encryption(rq: S3Request) -> web.StreamResponse:
    conf = config_xml.parse_encryption(await read_small_body(rq))
    await rq.cluster.buckets.update(rq.tenant, rq.bucket, encryption=conf)
    return web.Response(status=200)


@operation("GetBucketEncryption")
async def get_bucket_encryption(rq: S3Request) -> web.StreamResponse:
    conf = await bucket_setting(rq, "encryption")
    return xml_response(config_xml.encryption_xml(
        conf if conf is not None else config_xml.DEFAULT_ENCRYPTION))


clearing_operation("DeleteBucketEncryption", "encryption")
