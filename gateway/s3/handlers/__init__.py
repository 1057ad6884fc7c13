"""S3 operation handlers, one module per family, registered by AWS operation name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.s3.errors import S3Error
from gateway.s3.router import Endpoint
from gateway.s3.sigv4 import AuthResult
from storage.cluster import Cluster
from storage.config import GatewayConfig


@dataclass
class S3Request:
    """One authenticated request, routed to an operation."""

    request: web.Request
    ep: Endpoint
    auth: AuthResult
    tenant: str
    cluster: Cluster
    cfg: GatewayConfig
    request_id: str
    requester: str | None = None  # the signing tenant (None: anonymous); see gateway.s3.authz

    @property
    def bucket(self) -> str:
        assert self.ep.bucket is not None
        return self.ep.bucket

    @property
    def key(self) -> str:
        assert self.ep.key is not None
        return self.ep.key

    @property
    def headers(self):  # type: ignore[no-untyped-def]
        return self.request.headers

    @property
    def params(self):  # type: ignore[no-untyped-def]
        return self.ep.params


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
    b = await rq.cluster.buckets.get(rq.tenant, rq.bucket)
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
