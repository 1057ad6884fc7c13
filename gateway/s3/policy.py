"""Bucket policy evaluation, always inside the bucket owner's tenant.

A policy can only narrow what the owning tenant's keys may do (an explicit Deny wins) and open
anonymous reads (public-read: Allow, Principal "*", s3:GetObject). It never grants anything to
another tenant: `BucketService.get` refuses other tenants before any policy is read.

Supported: Effect, Action/NotAction, Resource/NotResource (with `*` and `?` wildcards),
Principal "*" / {"AWS": ...} naming "*", an access key id, the tenant name or
`arn:aws:iam::<tenant>:root`. A statement with a Condition is not evaluated (conditions are
not supported): as an Allow it grants nothing, as a Deny it always applies — the safe side.
The bucket-policy operations themselves are exempt for the owner, so a policy cannot lock
its owner out (AWS keeps the root user able to do the same).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from gateway.s3.errors import S3Error
from gateway.s3.router import Endpoint
from storage.cluster import Cluster
from storage.errors import NotFound

ANONYMOUS_OPS = frozenset({"GetObject", "HeadObject"})
EXEMPT_OPS = frozenset({"GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy",
                        "GetBucketPolicyStatus", "ListBuckets", "CreateBucket"})
_ACTIONS = {
    "HeadObject": "s3:GetObject",
    "HeadBucket": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "CopyObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "ListParts": "s3:ListMultipartUploadParts",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "DeleteObjects": "s3:DeleteObject",
    "GetBucketVersioning": "s3:GetBucketVersioning",
    "PutBucketVersioning": "s3:PutBucketVersioning",
}


def action_of(ep: Endpoint) -> str:
    """The IAM action an operation is authorized as (s3:GetObject for HeadObject, ...)."""
    if ep.op in ("GetObject", "HeadObject") and ep.params.get("versionId"):
        return "s3:GetObjectVersion"
    if ep.op == "DeleteObject" and ep.params.get("versionId"):
        return "s3:DeleteObjectVersion"
    return _ACTIONS.get(ep.op, "s3:" + ep.op)


def resource_of(bucket: str, key: str | None) -> str:
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")


@lru_cache(maxsize=4096)
def _pattern(glob: str, ignore_case: bool) -> re.Pattern[str]:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile(rx, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _as_list(v: Any) -> list[Any]:
    if isinstance(v, str | dict):
        return [v]
    return list(v) if isinstance(v, list) else []


def _matches(globs: Any, value: str, ignore_case: bool = False) -> bool:
    return any(isinstance(g, str) and _pattern(g, ignore_case).fullmatch(value)
               for g in _as_list(globs))


def _principal_matches(principal: Any, ids: frozenset[str]) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        names = _as_list(principal.get("AWS"))
        return any(n == "*" or n in ids for n in names if isinstance(n, str))
    return False


def _statement_applies(st: dict[str, Any], action: str, resource: str,
                       ids: frozenset[str]) -> bool:
    if "Principal" in st and not _principal_matches(st["Principal"], ids):
        return False
    if "NotPrincipal" in st and _principal_matches(st["NotPrincipal"], ids):
        return False
    if "Action" in st and not _matches(st["Action"], action, ignore_case=True):
        return False
    if "NotAction" in st and _matches(st["NotAction"], action, ignore_case=True):
        return False
    if "Resource" in st and not _matches(st["Resource"], resource):
        return False
    return not ("NotResource" in st and _matches(st["NotResource"], resource))


def evaluate(policy_text: str | None, action: str, resource: str,
             ids: frozenset[str]) -> str | None:
    """"Deny", "Allow" or None (no statement applies) for one request."""
    if not policy_text:
        return None
    try:
        doc = json.loads(policy_text)
    except ValueError:
        return None
    statements = doc.get("Statement") if isinstance(doc, dict) else None
    allowed = False
    for st in _as_list(statements):
        if not isinstance(st, dict) or not _statement_applies(st, action, resource, ids):
            continue
        if st.get("Effect") == "Deny":
            return "Deny"
        if st.get("Effect") == "Allow" and "Condition" not in st:
            allowed = True
    return "Allow" if allowed else None


def principal_ids(tenant: str, access_key: str) -> frozenset[str]:
    return frozenset({access_key, tenant, f"arn:aws:iam::{tenant}:root",
                      f"arn:aws:iam::{tenant}:user/{access_key}"})


async def check_tenant(cluster: Cluster, ep: Endpoint, tenant: str, access_key: str) -> None:
    """A signed request by the bucket's own tenant: refused only by an explicit Deny."""
    if ep.bucket is None or ep.op in EXEMPT_OPS:
        return
    try:
        b = await cluster.buckets.get_any(ep.bucket)
    except NotFound:
        return  # the handler answers NoSuchBucket
    if b.tenant != tenant:
        raise S3Error("AccessDenied")
    text = b.config.get("policy")
    if text and evaluate(str(text), action_of(ep), resource_of(ep.bucket, ep.key),
                         principal_ids(tenant, access_key)) == "Deny":
        raise S3Error("AccessDenied")


async def anonymous_tenant(cluster: Cluster, ep: Endpoint) -> str:
    """The owner tenant to serve an anonymous request as, if the bucket policy allows it.

    Only object reads can be public; everything else, or a missing bucket, is AccessDenied
    (so an anonymous caller never learns which buckets exist).
    """
    if ep.bucket is None or ep.key is None or ep.op not in ANONYMOUS_OPS:
        raise S3Error("AccessDenied")
    try:
        b = await cluster.buckets.get_any(ep.bucket)
    except NotFound:
        raise S3Error("AccessDenied") from None
    text = b.config.get("policy")
    if evaluate(str(text) if text else None, action_of(ep), resource_of(ep.bucket, ep.key),
                frozenset({"*"})) != "Allow":
        raise S3Error("AccessDenied")
    return b.tenant
