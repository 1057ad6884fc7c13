"""Bucket policies: what PutBucketPolicy accepts, and how a statement applies to a request.

Supported: Effect, Principal/NotPrincipal (`*`, `{"AWS": ...}` naming `*`, a tenant's
canonical id or name, `arn:aws:iam::<tenant>:root`, `arn:aws:iam::<tenant>:user/<key id>`, or
`{"CanonicalUser": id}`; `{"Service": name}` names a service principal, which only the
gateway's own services (the access-log delivery) are, never a signed request), Action/NotAction, Resource/NotResource (`*` and `?` wildcards),
and Condition (operators and keys in `gateway.s3.policy_conditions`). Anything else is
refused at PutBucketPolicy with MalformedPolicy, so a stored policy is always fully applied.
`evaluate` answers "Deny" (an explicit deny applies), "Allow" or None (nothing applies); the
caller (`gateway.s3.authz`) combines it with ownership and ACLs.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from typing import Any

from gateway.s3 import policy_conditions as cond
from gateway.s3.errors import S3Error
from gateway.s3.policy_actions import known as known_action
from gateway.s3.router import Endpoint

_ACTIONS = {
    "HeadObject": "s3:GetObject",
    "HeadBucket": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "CopyObject": "s3:PutObject",
    "PostObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "DeleteObjects": "s3:DeleteObject",
    "GetBucketLocation": "s3:GetBucketLocation",
    "PutBucketCors": "s3:PutBucketCORS",
    "GetBucketCors": "s3:GetBucketCORS",
    "DeleteBucketCors": "s3:PutBucketCORS",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "DeleteBucketEncryption": "s3:PutEncryptionConfiguration",
    "DeleteBucketTagging": "s3:PutBucketTagging",
    "DeleteBucketOwnershipControls": "s3:PutBucketOwnershipControls",
    "DeletePublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetObjectAttributes": "s3:GetObjectAttributes",
    "RestoreObject": "s3:RestoreObject",
    "GetObjectLegalHold": "s3:GetObjectLegalHold",
    "PutObjectLegalHold": "s3:PutObjectLegalHold",
    "GetObjectRetention": "s3:GetObjectRetention",
    "PutObjectRetention": "s3:PutObjectRetention",
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "PutObjectLockConfiguration": "s3:PutBucketObjectLockConfiguration",
}
_VERSIONED = {"GetObject": "s3:GetObjectVersion", "HeadObject": "s3:GetObjectVersion",
              "DeleteObject": "s3:DeleteObjectVersion", "GetObjectAcl": "s3:GetObjectVersionAcl",
              "PutObjectAcl": "s3:PutObjectVersionAcl",
              "GetObjectTagging": "s3:GetObjectVersionTagging",
              "PutObjectTagging": "s3:PutObjectVersionTagging",
              "DeleteObjectTagging": "s3:DeleteObjectVersionTagging"}
# The actions whose request context holds s3:ExistingObjectTag/<key>: reads of an existing
# object and of its ACL, tags, retention and legal hold, and changes to those subresources
# (AWS's Service Authorization Reference). PutObject, DeleteObject and their kin are not
# among them (AWS: "you cannot create a policy to grant or deny a user permissions to delete
# or overwrite an object based on its existing tags"): there the key is absent.
EXISTING_TAG_ACTIONS = frozenset({
    "s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAcl", "s3:GetObjectVersionAcl",
    "s3:GetObjectAttributes", "s3:GetObjectVersionAttributes", "s3:GetObjectTagging",
    "s3:GetObjectVersionTagging", "s3:PutObjectAcl", "s3:PutObjectVersionAcl",
    "s3:PutObjectTagging", "s3:PutObjectVersionTagging", "s3:DeleteObjectTagging",
    "s3:DeleteObjectVersionTagging", "s3:GetObjectRetention", "s3:PutObjectRetention",
    "s3:GetObjectLegalHold", "s3:PutObjectLegalHold",
})
# Object writes and deletes: AWS never puts s3:ExistingObjectTag in their context.
TAGLESS_WRITES = ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion")
# Condition keys whose fixed values keep a policy from being public (AWS's definition).
_NON_PUBLIC_KEYS = frozenset({"aws:sourceip", "aws:sourcearn", "aws:sourceaccount",
                              "aws:sourcevpc", "aws:sourcevpce", "aws:sourceowner",
                              "aws:principalaccount", "aws:userid", "aws:principalarn",
                              "aws:principalorgid"})
# (not s3:x-amz-server-side-encryption-aws-kms-key-id, which AWS lists: there the caller also
# needs kms:Encrypt on that key; here the owner's key is used for any caller who names it, so a
# "pin" to its ARN would let anyone write through Block Public Access (review17h))
# A role's sessions (AWS: a fixed aws:userid "outside the pattern AROLEID:*" counts, and so
# does that pattern): a role id, then any session name.
_ROLE_SESSIONS = re.compile(r"AROA[A-Z0-9]+:\*")


def action_of(ep: Endpoint) -> str:
    """The IAM action an operation is authorized as (s3:GetObject for HeadObject, ...)."""
    if ep.op in _VERSIONED and ep.params.get("versionId"):
        return _VERSIONED[ep.op]
    return _ACTIONS.get(ep.op, "s3:" + ep.op)


def resource_of(bucket: str, key: str | None) -> str:
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")


def _as_list(v: Any) -> list[Any]:
    if isinstance(v, str | dict):
        return [v]
    return list(v) if isinstance(v, list) else []


def _malformed(message: str) -> S3Error:
    return S3Error("MalformedPolicy", message)


def statements(text: str | None) -> list[dict[str, Any]]:
    """The statements of a stored policy ([] when there is none)."""
    if not text:
        return []
    return _statements_of(json.loads(text))


def _statements_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [st for st in _as_list(doc.get("Statement")) if isinstance(st, dict)]


def validate(text: str, bucket: str) -> None:
    """Refuse (MalformedPolicy) what `evaluate` would not apply exactly as AWS does."""
    allowed = {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction",
               "Resource", "NotResource", "Condition"}
    doc = json.loads(text)
    if not set(doc) <= {"Version", "Id", "Statement"}:
        raise _malformed("Policy has invalid top-level fields")
    # Version 2012-10-17 substitutes policy variables (`${aws:username}`, ...) in Resource
    # and Condition values; they are not evaluated here, so such a policy is refused rather
    # than matched against the literal text (2008-10-17 keeps them literal, as here).
    variables = doc.get("Version") == "2012-10-17"
    for st in _statements_of(doc):
        if variables and "${" in json.dumps([st.get("Resource"), st.get("NotResource"),
                                             st.get("Condition")]):
            raise _malformed("Policy variables are not supported")
        unknown = set(st) - allowed
        if unknown:
            raise _malformed(f"Unknown field {sorted(unknown)[0]}")
        if ("Principal" in st) == ("NotPrincipal" in st) or ("Action" in st) == (
                "NotAction" in st) or ("Resource" in st) == ("NotResource" in st):
            raise _malformed("A statement needs exactly one of Principal/NotPrincipal, "
                             "Action/NotAction and Resource/NotResource")
        if "NotPrincipal" in st and st.get("Effect") == "Allow":
            raise _malformed("NotPrincipal can only be used with Deny")
        _check_principal(st.get("Principal", st.get("NotPrincipal")))
        actions = st.get("Action", st.get("NotAction"))
        if not isinstance(actions, str | list) or not all(
                known_action(a) for a in _as_list(actions)):
            raise _malformed("Policy has invalid action")
        for r in _as_list(st.get("Resource", st.get("NotResource"))):
            if not isinstance(r, str) or not (
                    r == "*" or cond.glob_match(r, f"arn:aws:s3:::{bucket}")
                    or r.startswith(f"arn:aws:s3:::{bucket}/")
                    or cond.glob_match(r.split("/", 1)[0], f"arn:aws:s3:::{bucket}")):
                raise _malformed("Policy has invalid resource")
        if "Condition" in st:
            cond.validate(st["Condition"])


def _check_principal(p: Any) -> None:
    if p == "*":
        return
    if not isinstance(p, dict) or not p or not set(p) <= {"AWS", "CanonicalUser", "Service"}:
        raise _malformed("Invalid principal in policy")
    for kind, v in p.items():
        if not all(isinstance(x, str) and x for x in _as_list(v)) or not _as_list(v):
            raise _malformed("Invalid principal in policy")
        # AWS: "You cannot use a wildcard to match part of a principal name or ARN"; "*"
        # alone is everyone, except as a service (no service is everyone)
        if any(("*" in x or "?" in x) and (x != "*" or kind == "Service")
               for x in _as_list(v)):
            raise _malformed("Invalid principal in policy")


def principal_ids(tenant: str, canonical_id: str, access_key: str) -> frozenset[str]:
    """The names a signed request's principal answers to in Principal elements."""
    out = {tenant, canonical_id, access_key}
    for acct in {tenant, canonical_id}:
        out |= {f"arn:aws:iam::{acct}:root", f"arn:aws:iam::{acct}:user/{access_key}"}
    return frozenset(out)


def service_id(name: str) -> str:
    """The principal id of a service (`{"Service": name}`); no request's ids hold it."""
    return "service:" + name


def _principal_matches(principal: Any, ids: frozenset[str]) -> bool:
    for p in _as_list(principal):
        if p == "*":
            return True
        if isinstance(p, dict):
            for name in _as_list(p.get("AWS")) + _as_list(p.get("CanonicalUser")):
                if name == "*" or name in ids:
                    return True
            if any(isinstance(n, str) and service_id(n) in ids
                   for n in _as_list(p.get("Service"))):
                return True
    return False


def _any_glob(globs: Any, value: str, ignore_case: bool = False) -> bool:
    return any(isinstance(g, str) and cond.glob_match(g, value, ignore_case)
               for g in _as_list(globs))


def _takes_in(st: dict[str, Any], ids: frozenset[str]) -> bool:
    """Whether the statement's Principal (if any) names one of `ids` and its NotPrincipal
    (if any) names none."""
    if "Principal" in st and not _principal_matches(st["Principal"], ids):
        return False
    return not ("NotPrincipal" in st and _principal_matches(st["NotPrincipal"], ids))


def _covers(st: dict[str, Any], action: str) -> bool:
    """Whether the statement's Action (if any) names `action` and its NotAction (if any)
    does not (case-insensitive, with wildcards)."""
    if "Action" in st and not _any_glob(st["Action"], action, ignore_case=True):
        return False
    return not ("NotAction" in st and _any_glob(st["NotAction"], action, ignore_case=True))


def applies(st: dict[str, Any], action: str, resource: str, ids: frozenset[str],
            ctx: cond.Context) -> bool:
    """Whether one statement matches the request (principal, action, resource, condition)."""
    if not _takes_in(st, ids) or not _covers(st, action):
        return False
    if "Resource" in st and not _any_glob(st["Resource"], resource):
        return False
    if "NotResource" in st and _any_glob(st["NotResource"], resource):
        return False
    return "Condition" not in st or cond.holds(st["Condition"], ctx,
                                               deny=st.get("Effect") == "Deny")


def void_tag_denies(sts: Iterable[dict[str, Any]]) -> list[str]:
    """The Deny statements that name an object write or delete (`TAGLESS_WRITES`) under a
    condition on s3:ExistingObjectTag that fails when the key is absent: they never deny
    those actions, as on AWS (lows18 took the key out of their context; before, such a Deny
    was enforced here). Described for one warning (`authz`)."""
    out = []
    for i, st in enumerate(sts):
        block = st.get("Condition")
        if st.get("Effect") != "Deny" or not isinstance(block, dict):
            continue
        tag_keys = sorted(k for op, keys in block.items() if isinstance(keys, dict)
                          for k, v in keys.items()
                          if k.lower().startswith("s3:existingobjecttag/")
                          and not cond.holds_when_absent(op, v))
        acts = [a for a in TAGLESS_WRITES if _covers(st, a)]
        if tag_keys and acts:
            out.append(f"statement {st.get('Sid', i)!r} denies {', '.join(acts)} if "
                       f"{', '.join(tag_keys)}")
    return out


def may_allow(st: dict[str, Any], actions: Iterable[str], ids: frozenset[str]) -> bool:
    """Whether an Allow statement could grant one of `actions` to these principals on some
    resource of its bucket, whatever the request (its Resource and Condition not judged)."""
    if st.get("Effect") != "Allow":
        return False
    return _takes_in(st, ids) and any(_covers(st, a) for a in actions)


def evaluate(sts: Iterable[dict[str, Any]], action: str, resource: str, ids: frozenset[str],
             ctx: cond.Context) -> str | None:
    """"Deny", "Allow" or None for one request."""
    allowed = False
    for st in sts:
        if not applies(st, action, resource, ids, ctx):
            continue
        if st.get("Effect") == "Deny":
            return "Deny"
        if st.get("Effect") == "Allow":
            allowed = True
    return "Allow" if allowed else None


# Operators that hold only for a key present with one of the values listed. Negated ones,
# `...IfExists` and `ForAllValues:` also hold for other or absent values: they pin nothing.
_PINNING_OPS = frozenset({"StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals",
                          "ArnLike", "IpAddress"})


def _narrow(cidr: str) -> bool:
    """A source range AWS counts as fixed: /8 or narrower for IPv4, /32 for IPv6."""
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    return net.prefixlen >= (8 if net.version == 4 else 32)


def _pins(op: str, key: str, value: Any) -> bool:
    """Whether one condition limits a statement to fixed values of a key AWS accepts as
    making it non-public (no wildcard, no policy variable, no IP range wider than /8)."""
    qualifier, base, if_exists = cond.split(op)
    k = key.lower()
    if if_exists or qualifier == "ForAllValues" or base not in _PINNING_OPS \
            or k not in _NON_PUBLIC_KEYS:
        return False
    values = cond.values(value)
    if k == "aws:sourceip":
        return base == "IpAddress" and all(_narrow(v) for v in values)
    wild = ("*", "?") if base.endswith("Like") else ()
    return base != "IpAddress" and not any(
        "${" in v or (any(c in v for c in wild) and not (
            k == "aws:userid" and _ROLE_SESSIONS.fullmatch(v))) for v in values)


def statement_is_public(st: dict[str, Any]) -> bool:
    """An Allow to everyone ("*") not pinned by a fixed-value condition, as AWS defines it
    ("The meaning of public": a condition pins only with fixed values of aws:SourceIp,
    aws:SourceArn, aws:SourceAccount, aws:PrincipalAccount, aws:userid, ...)."""
    if st.get("Effect") != "Allow":
        return False
    if "NotPrincipal" in st:
        return True
    if not _principal_matches(st.get("Principal"), frozenset()):
        return False
    for op, keys in (st.get("Condition") or {}).items():
        if isinstance(keys, dict) and any(_pins(op, k, v) for k, v in keys.items()):
            return False
    return True


def is_public(text: str | None) -> bool:
    return any(statement_is_public(st) for st in statements(text))
