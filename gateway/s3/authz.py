"""Authorization: may this requester do this operation on this bucket or object?

Order (AWS's, with tenants as accounts and access keys as their root users):
1. ListBuckets and CreateBucket need a signature; other ops need the bucket (anonymous
   requests for a missing bucket get NoSuchBucket, as AWS answers), and a bucket whose
   tenant is shredded answers AccessDenied to everyone until it is reclaimed.
2. The bucket policy: an explicit Deny that applies refuses, whoever asks (the bucket's own
   tenant keeps Get/Put/DeleteBucketPolicy, as AWS keeps them for the root user).
3. The bucket's tenant may do everything else in its buckets (objects there are sealed under
   its keys whoever wrote them), except reading an object another tenant owns, or its ACL:
   that needs the object's ACL to grant it, as on AWS.
4. Anyone else (another tenant, or anonymous): nothing when RestrictPublicBuckets is on
   and the policy is public; else allowed by a policy Allow naming them (on an object
   another tenant owns only its owner is; Get/Put/DeleteBucketPolicy are the bucket account's alone, so an
   Allow of them answers 405 MethodNotAllowed), else by an ACL grant: the bucket's
   ACL for bucket-level permissions (READ lists, WRITE writes and deletes objects,
   READ_ACP/WRITE_ACP the bucket ACL), the object's ACL for reads and object ACL access
   (the object's owner holds its ACL). Public grants are ignored under IgnorePublicAcls and
   every grant under BucketOwnerEnforced. Otherwise AccessDenied.
The request then runs as the bucket's tenant; `S3Request.requester` names who asked (the
owner of what it writes).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.s3 import policy
from gateway.s3.acl import Acl
from gateway.s3.errors import S3Error
from gateway.s3.handlers import S3Request
from gateway.s3.http import iso_instant, parse_iso_instant
from gateway.s3.policy_actions import KEYED_HEADERS, header_keys
from gateway.s3.request_keys import (
    ACL_REQUIRED,
    FORM_SIGNATURE,
    HOLDS_POLICY,
    KEY_REQUESTER,
    LOCK_BODY,
    POLICY_STATEMENTS,
)
from gateway.s3.router import NO_BUCKET_OPS, Endpoint
from storage.cluster import Cluster
from storage.errors import InvalidInput, NotFound
from storage.records import Bucket, ObjectVersion

log = logging.getLogger(__name__)

POLICY_OPS = frozenset({"GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy",
                        "GetBucketPolicyStatus"})
# Only the bucket's account may read or change its policy: another account the policy allows
# them gets 405 MethodNotAllowed (AWS), one it does not allow 403.
ACCOUNT_ONLY_OPS = frozenset({"GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy"})
# operation -> (ACL level, permission) for requesters other than the bucket's tenant.
ACL_PERMISSIONS: dict[str, tuple[str, str]] = {
    "ListObjects": ("bucket", "READ"), "ListObjectsV2": ("bucket", "READ"),
    "ListObjectVersions": ("bucket", "READ"), "HeadBucket": ("bucket", "READ"),
    "ListMultipartUploads": ("bucket", "READ"), "GetBucketLocation": ("bucket", "READ"),
    "PutObject": ("bucket", "WRITE"), "PostObject": ("bucket", "WRITE"),
    "CopyObject": ("bucket", "WRITE"), "DeleteObject": ("bucket", "WRITE"),
    "DeleteObjects": ("bucket", "WRITE"), "CreateMultipartUpload": ("bucket", "WRITE"),
    "UploadPart": ("bucket", "WRITE"), "UploadPartCopy": ("bucket", "WRITE"),
    "CompleteMultipartUpload": ("bucket", "WRITE"), "AbortMultipartUpload": ("bucket", "WRITE"),
    "ListParts": ("bucket", "WRITE"),
    "GetBucketAcl": ("bucket", "READ_ACP"), "PutBucketAcl": ("bucket", "WRITE_ACP"),
    "GetObject": ("object", "READ"), "HeadObject": ("object", "READ"),
    "GetObjectAttributes": ("object", "READ"),
    "GetObjectAcl": ("object", "READ_ACP"), "PutObjectAcl": ("object", "WRITE_ACP"),
}
# The bucket's tenant needs a grant for these on objects another tenant owns (AWS: a bucket
# owner may delete such an object, but reads it and its ACL only if the object's ACL says so).
OWNER_CHECKED_OPS = frozenset({"GetObjectAcl", "PutObjectAcl", "GetObject", "HeadObject",
                               "GetObjectAttributes"})


@dataclass(frozen=True)
class Requester:
    """Who signed the request: its tenant, that tenant's canonical id, the access key."""

    tenant: str
    canonical_id: str
    access_key: str

    def ids(self) -> frozenset[str]:
        return policy.principal_ids(self.tenant, self.canonical_id, self.access_key)


async def requester_of(rq: S3Request) -> Requester | None:
    """The Requester of a request already authenticated (None when anonymous)."""
    if rq.requester is None:
        return None
    cid, _ = await rq.cluster.tenants.identity(rq.requester)
    return Requester(rq.requester, cid, rq.auth.access_key)


async def public_access_block(cluster: Cluster, b: Bucket) -> dict[str, bool]:
    """The effective public access block: the bucket's flags OR its tenant's (account)."""
    own = b.config.get("public_access_block") or {}
    tenant = await cluster.tenants.public_access_block(b.tenant)
    return {k: bool(own.get(k)) or bool(tenant.get(k)) for k in {*own, *tenant}}


def ownership(b: Bucket) -> str:
    return str(b.config.get("ownership") or "ObjectWriter")


def context(request: web.Request, ep: Endpoint, requester: Requester | None,
            tags: dict[str, str] | None, region: str,
            fields: Mapping[str, str] | None = None) -> dict[str, Sequence[str]]:
    """The condition keys of a request (lower-cased names; absent keys are not present).
    `fields` are a POST upload's form fields as headers (`acl` as x-amz-acl, ...): there
    they, not the HTTP request's headers, are what the s3: keys describe. `region` is the
    gateway's (aws:RequestedRegion). Principal keys, tenants being accounts signing as their
    root users: aws:PrincipalArn is `arn:aws:iam::<canonical id>:root` (absent when the id
    holds ':', which would put part of it in the ARN's resource component, where another
    tenant's pattern such as `arn:aws:iam::111:*` would match it), and with
    aws:PrincipalIsAWSService (false) present on signed requests only, as on AWS; no service
    calls on a caller's behalf here, so aws:ViaAWSService is always false."""
    h = request.headers
    amz = h if fields is None else fields
    now = time.time()
    ctx: dict[str, Sequence[str]] = {
        "aws:securetransport": ["true" if request.secure else "false"],
        "aws:currenttime": [datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")],
        "aws:epochtime": [str(int(now))],
        "aws:principaltype": ["Anonymous" if requester is None else "Account"],
        "aws:requestedregion": [region],
        "aws:viaawsservice": ["false"],
    }
    if request.remote:
        ctx["aws:sourceip"] = [request.remote]
    for name, key in (("Referer", "aws:referer"), ("User-Agent", "aws:useragent")):
        if name in h:
            ctx[key] = [h[name]]
    if requester is not None:
        ctx["aws:principalaccount"] = [requester.canonical_id]
        if ":" not in requester.canonical_id:
            ctx["aws:principalarn"] = [f"arn:aws:iam::{requester.canonical_id}:root"]
        ctx["aws:principalisawsservice"] = ["false"]
        ctx["aws:userid"] = [requester.access_key]
        ctx["aws:username"] = [requester.access_key]
    # Only the keys AWS lists for the request's action (policy_actions.header_keys): a
    # header an operation ignores (x-amz-acl on a GetObject, x-amz-object-lock-* on a
    # DeleteObject, review21e L5) is no condition key there.
    keyed = header_keys(policy.action_of(ep))
    for name in KEYED_HEADERS:
        if name in amz and name in keyed and name != "x-amz-tagging":
            ctx["s3:" + name.replace("x-amz-object-lock-", "object-lock-")] = [amz[name]]
    until = ctx.get("s3:object-lock-retain-until-date")
    when = parse_iso_instant(until[0]) if until else None
    if when is not None:  # the instant the write locks until, in the form Date reads as it
        ctx["s3:object-lock-retain-until-date"] = [iso_instant(when)]
        # AWS: the days of retention the request applies (its use: a policy's minimum and
        # maximum retention period). A part of a day counts as a day (MinIO's reading, and
        # so a NumericGreaterThan 10 refuses 10 days and a minute); a date already past is 0.
        ctx["s3:object-lock-remaining-retention-days"] = [
            str(max(0, math.ceil((when - now) / 86400)))]
    for name in ("prefix", "delimiter", "max-keys"):
        if name in ep.params and ep.key is None:
            ctx["s3:" + name] = [ep.params[name]]
    if "versionId" in ep.params:
        ctx["s3:versionid"] = [ep.params["versionId"]]
    if "Authorization" in h:
        ctx["s3:authtype"] = ["REST-HEADER"]
        ctx["s3:signatureversion"] = ["AWS4-HMAC-SHA256" if h["Authorization"].startswith(
            "AWS4-") else "AWS"]
    elif "X-Amz-Signature" in ep.params or "Signature" in ep.params:
        ctx["s3:authtype"] = ["REST-QUERY-STRING"]
        ctx["s3:signatureversion"] = ["AWS4-HMAC-SHA256" if "X-Amz-Signature" in ep.params
                                      else "AWS"]
    elif FORM_SIGNATURE in request:  # a signed browser upload (AWS: "POST")
        ctx["s3:authtype"] = ["POST"]
        ctx["s3:signatureversion"] = [request[FORM_SIGNATURE]]
    if "x-amz-tagging" in amz and "x-amz-tagging" in keyed:
        from urllib.parse import parse_qsl

        req_tags = parse_qsl(amz["x-amz-tagging"], keep_blank_values=True)
        _tag_keys(ctx, "s3:requestobjecttag/", req_tags)
        ctx["s3:requestobjecttagkeys"] = [k for k, _ in req_tags]
    _tag_keys(ctx, "s3:existingobjecttag/", (tags or {}).items())
    return ctx


def _tag_keys(ctx: dict[str, Sequence[str]], prefix: str,
              tags: Iterable[tuple[str, str]]) -> None:
    """One condition key per tag key, case-insensitive as condition keys are; tags whose
    keys differ only in case (S3 keeps both) are all its values, so a condition on
    Secret=yes sees the `Secret` tag whatever `secret` tag comes beside it."""
    out: dict[str, list[str]] = {}
    for k, v in tags:
        out.setdefault(prefix + k.lower(), []).append(v)
    ctx.update(out)


async def _version(cluster: Cluster, b: Bucket, key: str, vid: str | None,
                   ) -> ObjectVersion | None:
    try:  # its owner, ACL and tags: no inline body (a HEAD's read-ahead reads none)
        v = await cluster.objects.head(b, key, vid, bodies=False)
    except (NotFound, InvalidInput):
        return None
    return None if v.delete_marker else v


async def authorize(cluster: Cluster, request: web.Request, ep: Endpoint,
                    requester: Requester | None, b: Bucket | None, *, op: str | None = None,
                    bucket: str | None = None, key: str | None = None,
                    version_id: str | None = None, source: bool = False,
                    fields: Mapping[str, str] | None = None) -> str:
    """The tenant to run the request as, or S3Error (AccessDenied, NoSuchBucket).

    `b` is the record of the bucket addressed, as the caller read it (None: it does not
    exist); this reads no bucket record. `op`, `bucket`, `key` and `version_id` override the
    endpoint's (a copy's source read, `source`, checked against
    x-amz-source-expected-bucket-owner; a key of DeleteObjects). `fields`: a POST upload's
    form, the source of its condition keys (`context`).
    """
    op = op or ep.op
    if bucket is None:
        bucket, key = ep.bucket, ep.key
        version_id = ep.params.get("versionId")
    else:  # the condition keys (s3:VersionId, ...) are this key's, not the request URL's
        ep = key_endpoint(ep, op, bucket, key, version_id)
    if bucket is None or op in NO_BUCKET_OPS:
        if requester is None:
            raise S3Error("AccessDenied")
        return requester.tenant
    if b is None:
        if requester is None:
            raise S3Error("NoSuchBucket", BucketName=bucket)
        return requester.tenant  # the handler answers NoSuchBucket
    if not await cluster.tenants.active(b.tenant):
        # Shredded: its records wait for the reclaim worker, and none of them (names, sizes,
        # ETags, checksums, user metadata, tags, ACLs) is served to anyone meanwhile; the
        # answer is AWS's plain one, telling no caller that the owner's keys are gone.
        raise S3Error("AccessDenied")
    expected = request.headers.get("x-amz-source-expected-bucket-owner" if source
                                   else "x-amz-expected-bucket-owner")
    if expected is not None and expected not in (
            b.tenant, (await cluster.tenants.identity(b.tenant))[0]):
        raise S3Error("AccessDenied")
    is_owner = requester is not None and requester.tenant == b.tenant
    if is_owner and op in POLICY_OPS:
        return b.tenant
    text = b.config.get("policy")
    sts = _statements(request, b.name, str(text)) if text else []
    if op == "DeleteObjects" and sts:
        # The policy binds each key (`authorize_key` in the handler); a caller nothing could
        # let delete any key is refused here, before its body is read and its keys checked.
        if is_owner or await _may_delete_any(cluster, b, sts, requester):
            return b.tenant
        raise S3Error("AccessDenied")
    level, perm = ACL_PERMISSIONS.get(op, ("", ""))
    # The bucket's tenant needs the object's own grants only for objects another tenant
    # owns (ACL operations on them); everyone else needs them for every object operation.
    foreign_objects = bool(b.config.get("foreign_objects"))
    owner_check = is_owner and op in OWNER_CHECKED_OPS and foreign_objects
    ids = requester.ids() if requester else frozenset()

    def lists(ctx: dict[str, Sequence[str]]) -> str | None:
        """The policy's verdict on s3:ListBucket with s3:prefix = the key: who may list
        the bucket is told a key is missing (404), others get 403 (AWS)."""
        return policy.evaluate(sts, "s3:ListBucket", policy.resource_of(bucket, None), ids,
                               {**ctx, "s3:prefix": [key or ""]}) if sts else None

    # The bucket's tenant denied s3:ListBucket is not told whether a key exists either.
    region = cluster.cfg.gateway.region
    unlisted = is_owner and level == "object" and bool(sts) and lists(
        context(request, ep, requester, None, region, fields)) == "Deny"
    action = policy.action_of(Endpoint(op, bucket, key, ep.params))
    # s3:ExistingObjectTag is in the context of reads and subresource changes only (AWS),
    # never of a PutObject or DeleteObject: there the object's tags are not read at all.
    tagged = action in policy.EXISTING_TAG_ACTIONS and "existingobjecttag" in str(text).lower()
    need_object = key is not None and ((level == "object" and (
        not is_owner or owner_check or unlisted)) or (bool(sts) and foreign_objects
                                                      and not is_owner and level != "bucket")
                                       or tagged)
    version = await _version(cluster, b, key, version_id) if need_object and key else None
    enforced = ownership(b) == "BucketOwnerEnforced"
    who = requester.tenant if requester else None
    pab = await public_access_block(cluster, b)
    restrict = not is_owner and _restricted(pab, sts)
    ctx = (context(request, ep, requester, version.tags if version and tagged else None,
                   region, fields) if sts else {})
    if sts:
        verdict = policy.evaluate(sts, action, policy.resource_of(bucket, key), ids, ctx)
        if verdict == "Deny":
            raise S3Error("AccessDenied")
        if restrict:
            raise S3Error("AccessDenied")  # neither the policy nor an ACL grants anything
        if verdict == "Allow" and op in ACCOUNT_ONLY_OPS:
            raise S3Error("MethodNotAllowed", Method=request.method,
                          ResourceType="BUCKETPOLICY")  # as AWS answers it
        if verdict == "Allow" and not owner_check and _policy_grants(
                b, level, key, version, who, enforced):
            return b.tenant
    if is_owner and not owner_check and not (unlisted and version is None):
        return b.tenant
    ignore = pab.get("IgnorePublicAcls", False)
    bucket_acl = Acl.of(b.config.get("acl"), b.tenant)
    if level == "object" and version is None:
        # A missing object: 404 to those who may list the bucket, 403 to others (AWS).
        listing = lists(ctx)
        if listing != "Deny" and (is_owner or listing == "Allow" or (
                not enforced and bucket_acl.allows(who, "READ", ignore_public=ignore))):
            return b.tenant
        raise S3Error("AccessDenied")
    if not level or (enforced and not is_owner):
        raise S3Error("AccessDenied")
    if level == "bucket":
        if bucket_acl.allows(who, perm, ignore_public=ignore):
            request[ACL_REQUIRED] = True  # the access log's "ACL required" field
            return b.tenant
        raise S3Error("AccessDenied")
    assert version is not None
    obj_acl = Acl.of(version.acl, b.tenant)
    if enforced or (who is not None and obj_acl.owner == who
                    and (is_owner or perm in ("READ_ACP", "WRITE_ACP"))):
        return b.tenant
    if obj_acl.allows(who, perm, ignore_public=ignore):
        request[ACL_REQUIRED] = True
        return b.tenant
    raise S3Error("AccessDenied")


def key_endpoint(ep: Endpoint, op: str, bucket: str, key: str | None,
                 version_id: str | None) -> Endpoint:
    """The endpoint one key of a request is authorized as (a DeleteObjects entry, a copy's
    source, the key an Object Lock permission is checked on): its VersionId is its
    s3:VersionId, not the request URL's `versionId` (which names no entry of a batch, nor a
    copy's source); the URL's other parameters stay (a presigned URL's signature is every
    key's s3:authtype), and with a key set the URL's prefix/delimiter are no condition keys."""
    params = {k: v for k, v in ep.params.items() if k != "versionId"}
    if version_id is not None:
        params["versionId"] = version_id
    return Endpoint(op, bucket, key, params, ep.virtual_host)


async def authorize_key(rq: S3Request, key: str, version_id: str | None) -> None:
    """AccessDenied unless the caller may delete this key of a DeleteObjects request. AWS
    authorizes every key as its own s3:DeleteObject (or s3:DeleteObjectVersion), so a policy
    Deny or Allow of some keys binds exactly those; without a policy the request's own check
    (the bucket's tenant, or a bucket ACL WRITE grant) already decided for every key."""
    b = rq.existing_bucket()
    if not b.config.get("policy"):
        return
    requester = rq.request.get(KEY_REQUESTER)
    if requester is None:  # once per request, not per key
        requester = rq.request[KEY_REQUESTER] = (await requester_of(rq),)
    await authorize(rq.cluster, rq.request, rq.ep, requester[0], b, op="DeleteObject",
                    bucket=b.name, key=key, version_id=version_id)


async def holds_permission(rq: S3Request, action: str, key: str,
                           version_id: str | None) -> bool:
    """Whether the caller holds `action` on object `key` (version `version_id`, its
    s3:VersionId) besides the operation it was authorized for: an Object Lock permission AWS
    checks on top (s3:BypassGovernanceRetention
    for `x-amz-bypass-governance-retention`, s3:PutObjectRetention / s3:PutObjectLegalHold for
    the lock headers of a write). The bucket's tenant (its root user) holds it unless the
    bucket policy denies it; anyone else only through a policy Allow: no ACL grant carries
    it, so a public-read-write bucket gives strangers none."""
    b = rq.existing_bucket()
    is_owner = rq.requester is not None and rq.requester == b.tenant
    text = b.config.get("policy")
    if not text:
        return is_owner
    memo = rq.request.get(HOLDS_POLICY)
    if memo is None or memo[0] != text:  # once per request (DeleteObjects: up to 1000 keys)
        requester = await requester_of(rq)
        pab = await public_access_block(rq.cluster, b)
        sts = _statements(rq.request, b.name, str(text))
        memo = (text, sts, requester, not is_owner and _restricted(pab, sts))
        rq.request[HOLDS_POLICY] = memo
    _, sts, requester, restrict = memo
    if not sts:
        return is_owner
    body = rq.request.get(LOCK_BODY)  # a Retention/LegalHold body's keys (object_lock)
    ctx = context(rq.request, key_endpoint(rq.ep, rq.ep.op, b.name, key, version_id),
                  requester, None, rq.cfg.region, rq.headers if body is None else body[1])
    ids = requester.ids() if requester else frozenset()
    verdict = policy.evaluate(sts, action, policy.resource_of(b.name, key), ids, ctx)
    return verdict != "Deny" and (is_owner or (verdict == "Allow" and not restrict))


async def _may_delete_any(cluster: Cluster, b: Bucket, sts: list[dict[str, Any]],
                          requester: Requester | None) -> bool:
    """Whether a DeleteObjects by someone other than the bucket's tenant could delete any
    key: a policy Allow naming it of s3:DeleteObject(Version), or the bucket ACL's WRITE;
    neither under RestrictPublicBuckets with a public policy, nor an ACL under
    BucketOwnerEnforced."""
    pab = await public_access_block(cluster, b)
    if _restricted(pab, sts):
        return False
    ids = requester.ids() if requester else frozenset()
    if any(policy.may_allow(st, ("s3:DeleteObject", "s3:DeleteObjectVersion"), ids)
           for st in sts):
        return True
    return ownership(b) != "BucketOwnerEnforced" and Acl.of(b.config.get("acl"), b.tenant).allows(
        requester.tenant if requester else None, "WRITE",
        ignore_public=pab.get("IgnorePublicAcls", False))


def _restricted(pab: dict[str, bool], sts: list[dict[str, Any]]) -> bool:
    """RestrictPublicBuckets on a bucket whose policy is public: then only the bucket's
    account has access (AWS: "public and cross-account access within any public bucket
    policy, including non-public delegation to specific accounts, is blocked"), and no
    ACL grant gives any either ("restricts access to this bucket to only ... users within
    this account")."""
    return bool(pab.get("RestrictPublicBuckets")) and any(
        policy.statement_is_public(st) for st in sts)


def _statements(request: web.Request, bucket: str, text: str) -> list[dict[str, Any]]:
    """The policy's statements, parsed once per request (DeleteObjects checks up to 1000
    keys against it)."""
    memo = request.get(POLICY_STATEMENTS)
    if memo is None or memo[0] != text:
        memo = request[POLICY_STATEMENTS] = (text, policy.statements(text))
        _warn_changed_meaning(bucket, text, memo[1])
    return memo[1]


_WARNED: set[tuple[str, str]] = set()  # (bucket, policy text) already warned about
_WARNED_MAX = 1024


def _warn_changed_meaning(bucket: str, text: str, sts: list[dict[str, Any]]) -> None:
    """Warnings, once per bucket policy this process loads, for a stored policy this release
    reads differently from the one that stored it: a Deny on an object write or delete keyed
    on s3:ExistingObjectTag (enforced before lows18, void now, as on AWS: review18c L3), and
    a policy PutBucketPolicy now refuses (atkpolicy21's strict reading: a Numeric value such
    as "1_0" matched as 10 before and matches nothing now, so its Deny no longer holds:
    review21e L4; s3low22: an action S3 does not define, which matched nothing before
    too). A stored policy cannot be refused: it is evaluated as it reads now, and
    the log says so. Takes the statements the request parsed already (a policy is parsed
    once per request)."""
    if (bucket, text) in _WARNED:
        return
    if len(_WARNED) >= _WARNED_MAX:
        _WARNED.clear()
    _WARNED.add((bucket, text))
    for what in policy.void_tag_denies(sts):
        log.warning("bucket %s: policy %s; AWS never puts s3:ExistingObjectTag in a "
                    "PutObject or DeleteObject request, so this Deny never applies to them "
                    "(it did before this release)", bucket, what)
    try:
        policy.validate(text, bucket)
    except Exception as exc:  # noqa: BLE001 - a stored document: told, never a 500
        log.warning("bucket %s: its stored policy would be refused now (%s); it is "
                    "evaluated as it reads: an action name S3 does not define matches no "
                    "request, and a condition value this release cannot read matches "
                    "nothing, so a statement naming one may not apply: put a corrected "
                    "policy", bucket, exc.message if isinstance(exc, S3Error) else exc)


def _policy_grants(b: Bucket, level: str, key: str | None, version: ObjectVersion | None,
                   who: str | None, enforced: bool) -> bool:
    """Whether a policy Allow grants the operation. On an object, only one the bucket's
    tenant owns (AWS: a bucket policy's permissions "don't apply to objects that are owned
    by other AWS accounts"; their owners grant through the object's ACL), or to the object's
    owner; under BucketOwnerEnforced the bucket's tenant owns every object. A missing object
    (the object's own operations read it first) is answered by the missing-object rule: 404
    only to who may list the bucket, 403 to a caller allowed s3:GetObject alone (AWS)."""
    if level == "bucket" or key is None:
        return True
    if version is None:
        return level != "object"
    if enforced:
        return True
    owner = Acl.of(version.acl, b.tenant).owner
    return owner in (b.tenant, who)


def object_owner(rq_requester: str | None, b: Bucket, acl_header: str | None) -> str:
    """Who owns an object a request writes (ObjectOwnership decides, as AWS does)."""
    mode = ownership(b)
    if rq_requester is None or mode == "BucketOwnerEnforced":
        return b.tenant
    if mode == "BucketOwnerPreferred" and acl_header == "bucket-owner-full-control":
        return b.tenant
    return rq_requester


def stored_acl(acl: Acl, bucket_tenant: str) -> dict[str, Any]:
    """The record to store: {} for the bucket tenant's private default (small records)."""
    if acl.owner == bucket_tenant and acl.is_private_default():
        return {}
    return acl.record()
