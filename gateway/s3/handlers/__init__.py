"""S3 operation handlers, one module per family, registered by AWS operation name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.s3.context import RequestContext
from gateway.s3.errors import S3Error

S3Request = RequestContext  # the name handlers have used; see gateway.s3.context

Handler = Callable[[S3Request], Awaitable[web.StreamResponse]]
HANDLERS: dict[str, Handler] = {}


def operation(*names: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for n in names:
            HANDLERS[n] = fn
        return fn

    return register


def xml_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None,
                 ) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/xml",
                        headers=headers)


async def bucket_setting(rq: S3Request, name: str, missing: str | None = None) -> Any:
    """The bucket's stored configuration `name`; when it is unset, None, or with `missing`
    that S3 error (NoSuch...Configuration, naming the bucket)."""
    b = rq.existing_bucket()
    value = b.config.get(name)
    if value is None and missing is not None:
        raise S3Error(missing, BucketName=rq.bucket)
    return value


def clearing_operation(op: str, name: str) -> None:
    """Register `op` as the Delete... of the bucket configuration `name`: unset, 204."""

    @operation(op)
    async def clear(rq: S3Request) -> web.StreamResponse:
        await rq.cluster.buckets.update(rq.tenant, rq.bucket, **{name: None})
        return web.Response(status=204)


def load_all() -> dict[str, Handler]:
    """Import every handler module so their operations register."""
    from gateway.s3.handlers import (  # noqa: F401
        access,
        attributes,
        batch,
        bucket_config,
        bucket_logging,
        buckets,
        copy,
        listing,
        multipart,
        object_lock,
        objects,
        restore,
        tagging,
    )

    return HANDLERS
