"""The typed context of one S3 request, built once by the pipeline (`gateway.s3.server`) and
handed to its handler: who asked, the tenant it runs as, the bucket record read once, the
operation and its arguments.

The addressed bucket's record is read exactly once per request, before authorization
(`resolve_bucket`); authorization, encryption defaults, handlers and the storage services
all use that record (`RequestContext.bucket_record`) instead of reading it again. A commit
decided on it compares its revision in the same transaction (`BucketService.guard`), so a
bucket changed meanwhile is read again there, never trusted stale.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.s3.router import Endpoint
from gateway.s3.sigv4 import AuthResult
from storage.buckets import BucketService
from storage.cluster import Cluster
from storage.config import GatewayConfig
from storage.errors import BucketNotFound
from storage.records import Bucket

# Operations that read the addressed key's current record first (no versionId): the
# pipeline reads it with the bucket's, in one request (`inline_bodies.read_ahead`).
READS_CURRENT = frozenset({"GetObject", "HeadObject", "DeleteObject"})
READS_BODIES = frozenset({"GetObject"})  # of those, the one that uses the inline bodies


async def resolve_bucket(cluster: Cluster, ep: Endpoint, ahead: bool = False,
                         bodies: bool = True) -> Bucket | None:
    """The record of the bucket a request addresses (None: no bucket, or it does not exist):
    the one read of it the request makes. `ahead` (the pipeline's read): a GET, HEAD or
    DeleteObject of the current version reads the object's record in the same request, a
    GET its first inline bodies too unless not `bodies`."""
    if ep.bucket is None:
        return None
    current = (ep.key if ahead and ep.op in READS_CURRENT and "versionId" not in ep.params
               else None)
    try:
        return await cluster.buckets.get_any(ep.bucket, current,
                                             bodies and ep.op in READS_BODIES)
    except BucketNotFound:
        return None


@dataclass
class RequestContext:
    """One authenticated, authorized request, routed to an operation."""

    request: web.Request
    ep: Endpoint
    auth: AuthResult
    tenant: str  # the tenant the request runs as (the bucket's, see gateway.s3.authz)
    cluster: Cluster
    cfg: GatewayConfig
    request_id: str
    requester: str | None = None  # the signing tenant (None: anonymous); see gateway.s3.authz
    bucket_record: Bucket | None = None  # the addressed bucket, read once (None: missing)

    @property
    def bucket(self) -> str:
        """The addressed bucket's name."""
        assert self.ep.bucket is not None
        return self.ep.bucket

    @property
    def key(self) -> str:
        assert self.ep.key is not None
        return self.ep.key

    @property
    def op(self) -> str:
        return self.ep.op

    @property
    def headers(self):  # type: ignore[no-untyped-def]
        return self.request.headers

    @property
    def params(self):  # type: ignore[no-untyped-def]
        return self.ep.params

    @property
    def version_id(self) -> str | None:
        """`?versionId=` (None: the current version)."""
        return self.ep.params.get("versionId")

    @property
    def upload_id(self) -> str:
        return self.ep.params.get("uploadId", "")

    def existing_bucket(self) -> Bucket:
        """The addressed bucket's record (read once by the pipeline): NoSuchBucket if it does
        not exist, AccessDenied if the request does not run as its tenant."""
        if self.bucket_record is None:
            raise BucketNotFound(self.bucket)
        return BucketService.owned(self.bucket_record, self.tenant)
