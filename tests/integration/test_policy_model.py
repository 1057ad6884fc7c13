"""Random bucket policies, bucket ACLs and public access blocks against a model of AWS's
evaluation, on a real cluster: requests by the bucket's tenant, another tenant and anonymous
callers (GET, and CopyObject into the caller's own bucket, of a public-read, a private
and a missing object, ListObjectsV2 with and
without a prefix, PutObject with and without an ACL header, DeleteObject, DeleteObjects)
must be allowed or refused exactly as the model says.

The model is written from AWS's documentation, not from the gateway: an applying Deny
refuses anyone, the bucket's tenant included; then the bucket's tenant (the account's root)
may; anyone else needs a policy Allow or an ACL grant (public grants ignored under IgnorePublicAcls): the bucket's READ to list,
WRITE to write and delete, the object's READ to read it), unless RestrictPublicBuckets
is on and the policy is public: then only the bucket's account has access. A missing key answers 404 only to
who may list the bucket (s3:ListBucket with s3:prefix = the key, or bucket READ), 403 to
others. Statements combine Principal/NotPrincipal, Action/NotAction with wildcards,
Resource/NotResource with `*` and `?`, and conditions on aws:SecureTransport, aws:SourceIp,
s3:prefix and s3:x-amz-acl (Null, negated operators and ...IfExists included), on the time
(Date and Numeric operators), the principal (aws:PrincipalType, aws:userid,
aws:PrincipalAccount, aws:PrincipalArn, s3:authType) and the user agent, with ForAnyValue/
ForAllValues qualifiers."""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ops.botoconfig import no_retries
from tests.integration.cluster import LocalCluster

EXAMPLES = int(os.environ.get("POLICY_MODEL_EXAMPLES", "40"))
WHO = ("a", "b", None)  # `a` owns the bucket; None: anonymous
PUBLIC, PRIVATE, MISSING = "pub/x", "priv/y", "pub/none"

# Conditions: (the policy's block, whether it holds for a request context, pins to fixed
# values in AWS's "public" sense). Requests come over plain HTTP from 127.0.0.1.
CONDITIONS: list[tuple[dict[str, Any] | None, Any, bool]] = [
    (None, lambda c: True, False),
    ({"Bool": {"aws:SecureTransport": "false"}}, lambda c: True, False),
    ({"Bool": {"aws:SecureTransport": "true"}}, lambda c: False, False),
    ({"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}, lambda c: True, True),
    ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, lambda c: False, True),
    ({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, lambda c: True, False),
    ({"StringLike": {"s3:prefix": "pub/*"}},
     lambda c: c.get("prefix") is not None and c["prefix"].startswith("pub/"), False),
    ({"StringEquals": {"s3:prefix": ""}}, lambda c: c.get("prefix") == "", False),
    ({"Null": {"s3:prefix": "true"}}, lambda c: c.get("prefix") is None, False),
    ({"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}},
     lambda c: c.get("acl") == "bucket-owner-full-control", False),
    ({"StringNotEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}},
     lambda c: c.get("acl") != "bucket-owner-full-control", False),
    ({"StringEqualsIfExists": {"s3:x-amz-acl": "bucket-owner-full-control"}},
     lambda c: c.get("acl") in (None, "bucket-owner-full-control"), False),
    ({"Null": {"s3:x-amz-acl": "false"}}, lambda c: c.get("acl") is not None, False),
    # atkpolicy21: date, numeric, set and principal operators; `{cid_X}` is tenant X's
    # canonical id, put in by `_document`
    ({"DateGreaterThan": {"aws:CurrentTime": "2001-01-01T00:00:00Z"}}, lambda c: True, False),
    ({"DateLessThan": {"aws:CurrentTime": "2001-01-01T00:00:00Z"}}, lambda c: False, False),
    ({"NumericGreaterThan": {"aws:EpochTime": "978307200"}}, lambda c: True, False),
    ({"NumericLessThanEquals": {"aws:EpochTime": 978307200}}, lambda c: False, False),
    ({"StringEquals": {"aws:PrincipalType": "Anonymous"}}, lambda c: c["who"] is None, False),
    ({"Null": {"aws:userid": "true"}}, lambda c: c["who"] is None, False),
    ({"StringEquals": {"aws:PrincipalAccount": "{cid_b}"}}, lambda c: c["who"] == "b", True),
    ({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::{cid_a}:*"}},
     lambda c: c["who"] == "a", False),
    ({"StringEquals": {"s3:authType": "REST-HEADER"}}, lambda c: c["who"] is not None, False),
    ({"StringLike": {"aws:UserAgent": "*Boto3/*"}}, lambda c: True, False),
    ({"ForAnyValue:StringLike": {"s3:prefix": ["x*", "pub*"]}},
     lambda c: (c.get("prefix") or "").startswith("pub"), False),
    ({"ForAllValues:StringEquals": {"s3:prefix": "pub/"}},
     lambda c: c.get("prefix") in (None, "pub/"), False),
    ({"StringEqualsIgnoreCase": {"s3:x-amz-acl": "BUCKET-OWNER-Full-Control"}},
     lambda c: c.get("acl") == "bucket-owner-full-control", False),
    ({"StringNotLikeIfExists": {"s3:prefix": "p?b*"}},
     lambda c: c.get("prefix") is None or not c["prefix"].startswith("pub"), False),
    ({"BoolIfExists": {"aws:SecureTransport": "false"}}, lambda c: True, False),
]
ACTIONS = ["s3:GetObject", "s3:Get*", "s3:*", "s3:PutObject", "s3:ListBucket",
           "s3:DeleteObject", "s3:*Object", "S3:getobject", ["s3:GetObject", "s3:ListBucket"],
           "s3:List*"]
# Resources, relative to the bucket ARN "arn:aws:s3:::B" ("*" alone is the wildcard ARN).
RESOURCES = ["/*", "/pub/*", "", "*", "/p?b/*", "/priv/*", ["", "/*"], "/pub/x"]
PRINCIPALS = ["*", "a", "b", "b-arn", "b-cid"]
BUCKET_ACLS = ["private", "public-read", "public-read-write", "authenticated-read",
               "grant-read:b", "grant-write:b"]


@dataclass(frozen=True)
class Stmt:
    effect: str
    principal: str
    not_principal: bool
    action: Any
    not_action: bool
    resource: Any
    not_resource: bool
    condition: int  # index into CONDITIONS


def _glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    rx = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(rx, value, re.S | (re.I if ignore_case else 0)) is not None


def _many(v: Any) -> list[str]:
    return v if isinstance(v, list) else [v]


class Model:
    """AWS's answer for one request, given the bucket's policy, ACL and public access block."""

    def __init__(self, bucket: str, stmts: list[Stmt], acl: str, restrict: bool,
                 ignore: bool) -> None:
        self.bucket, self.stmts, self.acl = bucket, stmts, acl
        self.restrict, self.ignore = restrict, ignore
        # RestrictPublicBuckets on a bucket whose policy is public: only the bucket's account
        # has access ("public and cross-account access ... including non-public delegation to
        # specific accounts, is blocked")
        self.locked = restrict and any(self.public(s) for s in stmts)

    def _arn(self, rel: str) -> str:
        return "*" if rel == "*" else f"arn:aws:s3:::{self.bucket}{rel}"

    def _applies(self, s: Stmt, who: str | None, action: str, resource: str,
                 ctx: dict[str, str]) -> bool:
        named = s.principal == "*" or (who is not None and s.principal.split("-")[0] == who)
        if named == s.not_principal:
            return False
        acted = any(_glob(a, action, True) for a in _many(s.action))
        if acted == s.not_action:
            return False
        res = any(_glob(self._arn(r), resource) for r in _many(s.resource))
        if res == s.not_resource:
            return False
        return bool(CONDITIONS[s.condition][1]({**ctx, "who": who}))

    def public(self, s: Stmt) -> bool:
        return s.effect == "Allow" and (s.principal == "*" or s.not_principal) and not (
            CONDITIONS[s.condition][2])

    def verdict(self, who: str | None, action: str, key: str | None,
                ctx: dict[str, str]) -> str | None:
        resource = f"arn:aws:s3:::{self.bucket}" + ("" if key is None else "/" + key)
        out = None
        for s in self.stmts:
            if not self._applies(s, who, action, resource, ctx):
                continue
            if s.effect == "Deny":
                return "Deny"
            if who == "a" or not self.locked:
                out = "Allow"
        return out

    def _bucket_acl(self, who: str | None, perm: str) -> bool:
        if self.locked:
            return False
        if self.acl == f"grant-{perm.lower()}:b":
            return who == "b"
        public = {"public-read": ("READ",), "public-read-write": ("READ", "WRITE")}
        if perm in public.get(self.acl, ()):
            return not self.ignore
        return self.acl == "authenticated-read" and perm == "READ" and who is not None \
            and not self.ignore

    def may(self, who: str | None, action: str, key: str | None, ctx: dict[str, str],
            acl_perm: str | None) -> bool | None:
        """True/False, or None for "no grant at all" (the caller decides 403 vs 404)."""
        v = self.verdict(who, action, key, ctx)
        if v == "Deny":
            return False
        if who == "a" or v == "Allow":
            return True
        return bool(acl_perm and self._bucket_acl(who, acl_perm))

    def get(self, who: str | None, key: str) -> int:
        """GetObject of an object `a` wrote (PUBLIC with public-read, PRIVATE private)."""
        if self.verdict(who, "s3:GetObject", key, {}) == "Deny":
            return 403
        if key == MISSING:
            if who == "a" and self.verdict(who, "s3:ListBucket", None, {"prefix": key}) \
                    != "Deny":
                return 404
            lists = self.may(who, "s3:ListBucket", None, {"prefix": key}, "READ")
            return 404 if lists else 403
        if who == "a" or self.verdict(who, "s3:GetObject", key, {}) == "Allow":
            return 200
        return 200 if key == PUBLIC and not self.ignore and not self.locked else 403

    def listing(self, who: str | None, prefix: str | None) -> int:
        ctx = {} if prefix is None else {"prefix": prefix}
        return 200 if self.may(who, "s3:ListBucket", None, ctx, "READ") else 403

    def put(self, who: str | None, key: str, acl: str | None) -> int:
        ctx = {} if acl is None else {"acl": acl}
        return 200 if self.may(who, "s3:PutObject", key, ctx, "WRITE") else 403

    def delete(self, who: str | None, key: str) -> int:
        return 204 if self.may(who, "s3:DeleteObject", key, {}, "WRITE") else 403


def _stmt() -> st.SearchStrategy[Stmt]:
    def build(effect: str, principal: str, notp: bool, action: Any, nota: bool,
              resource: Any, notr: bool, condition: int) -> Stmt:
        return Stmt(effect, principal, notp and effect == "Deny", action, nota, resource,
                    notr, condition)

    return st.builds(build, st.sampled_from(["Allow", "Deny"]), st.sampled_from(PRINCIPALS),
                     st.booleans(), st.sampled_from(ACTIONS), st.booleans(),
                     st.sampled_from(RESOURCES), st.booleans(),
                     st.integers(0, len(CONDITIONS) - 1))


def _principal(w: dict[str, Any], p: str) -> Any:
    if p == "*":
        return "*"
    name = w["names"][p.split("-")[0]]
    if p.endswith("-arn"):
        return {"AWS": f"arn:aws:iam::{name}:root"}
    if p.endswith("-cid"):
        return {"CanonicalUser": w["ids"][p.split("-")[0]]}
    return {"AWS": name}


def _document(w: dict[str, Any], bucket: str, stmts: list[Stmt]) -> str:
    out = []
    for s in stmts:
        arn = [f"arn:aws:s3:::{bucket}{r}" if r != "*" else "*" for r in _many(s.resource)]
        d: dict[str, Any] = {
            "Effect": s.effect,
            "NotPrincipal" if s.not_principal else "Principal": _principal(w, s.principal),
            "NotAction" if s.not_action else "Action": s.action,
            "NotResource" if s.not_resource else "Resource": arn if isinstance(
                s.resource, list) else arn[0]}
        if CONDITIONS[s.condition][0] is not None:
            d["Condition"] = CONDITIONS[s.condition][0]
        out.append(d)
    text = json.dumps({"Version": "2012-10-17", "Statement": out})
    for t in ("a", "b"):
        text = text.replace("{cid_" + t + "}", w["ids"][t])
    return text


@pytest.fixture(scope="module")
def w(cluster: LocalCluster) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    ids = {t: t * 56 + tag for t in ("a", "b")}
    names = {t: f"pm-{t}-{tag}" for t in ("a", "b")}
    cl: dict[str | None, Any] = {t: cluster.tenant_client(names[t], {"canonical_id": ids[t]})
                                 for t in ("a", "b")}
    cl[None] = boto3.client("s3", endpoint_url=cluster.endpoint, region_name="us-east-1",
                            config=no_retries(signature_version=UNSIGNED,
                                              s3={"addressing_style": "path"}))
    bucket = f"pm-{tag}"
    cl["a"].create_bucket(Bucket=bucket)
    cl["a"].put_object(Bucket=bucket, Key=PUBLIC, Body=b"public", ACL="public-read")
    cl["a"].put_object(Bucket=bucket, Key=PRIVATE, Body=b"private")
    for t in ("a", "b"):  # each tenant's own bucket, a copy's destination
        cl[t].create_bucket(Bucket=f"{bucket}-{t}")
    return {"cl": cl, "ids": ids, "names": names, "bucket": bucket}


def _status(ok: int, fn: Any, **kw: Any) -> int:
    """The status of one boto3 call: `ok` when it succeeds."""
    try:
        r = fn(**kw)
        if "Body" in r:
            r["Body"].read()
    except ClientError as e:
        return int(e.response["ResponseMetadata"]["HTTPStatusCode"])
    return ok


def _setup(w: dict[str, Any], stmts: list[Stmt], acl: str, restrict: bool,
           ignore: bool) -> Model:
    a, bucket = w["cl"]["a"], w["bucket"]
    a.delete_bucket_policy(Bucket=bucket)  # first: the last one may deny the others to `a`
    a.delete_public_access_block(Bucket=bucket)
    grant = {"private": {}, "grant-read:b": {"GrantRead": f"id={w['ids']['b']}"},
             "grant-write:b": {"GrantWrite": f"id={w['ids']['b']}"}}
    if acl in grant:
        a.put_bucket_acl(Bucket=bucket, GrantFullControl=f"id={w['ids']['a']}", **grant[acl])
    else:
        a.put_bucket_acl(Bucket=bucket, ACL=acl)
    if restrict or ignore:
        a.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
            "RestrictPublicBuckets": restrict, "IgnorePublicAcls": ignore})
    if stmts:  # last: it may deny `a` the calls above
        a.put_bucket_policy(Bucket=bucket, Policy=_document(w, bucket, stmts))
    return Model(bucket, stmts, acl, restrict, ignore)


def _check(w: dict[str, Any], model: Model) -> None:
    bucket, got, want = w["bucket"], [], []
    for who in WHO:
        c = w["cl"][who]
        for key in (PUBLIC, PRIVATE, MISSING):
            got.append(("get", who, key, _status(200, c.get_object, Bucket=bucket, Key=key)))
            want.append(("get", who, key, model.get(who, key)))
            if who is not None:  # a copy's source is read as a GetObject of it
                got.append(("copy", who, key, _status(
                    200, c.copy_object, Bucket=f"{bucket}-{who}", Key="copy",
                    CopySource={"Bucket": bucket, "Key": key})))
                want.append(("copy", who, key, model.get(who, key)))
        for prefix in (None, "pub/", ""):
            kw = {} if prefix is None else {"Prefix": prefix}
            got.append(("list", who, prefix, _status(200, c.list_objects_v2, Bucket=bucket,
                                                     **kw)))
            want.append(("list", who, prefix, model.listing(who, prefix)))
        for key, acl in (("pub/w", None), ("priv/w", "bucket-owner-full-control")):
            kw = {} if acl is None else {"ACL": acl}
            got.append(("put", who, key, acl, _status(200, c.put_object, Bucket=bucket, Key=key,
                                                      Body=b"w", **kw)))
            want.append(("put", who, key, acl, model.put(who, key, acl)))
        got.append(("delete", who, _status(204, c.delete_object, Bucket=bucket, Key="pub/w")))
        want.append(("delete", who, model.delete(who, "pub/w")))
        if who is not None:  # DeleteObjects needs Content-MD5, which unsigned boto3 omits
            keys = ["pub/w", "priv/w"]
            try:
                r = c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k}
                                                                        for k in keys]})
                done = {d["Key"] for d in r.get("Deleted", [])}
                status = [204 if k in done else 403 for k in keys]
            except ClientError as e:
                status = [int(e.response["ResponseMetadata"]["HTTPStatusCode"])] * 2
            got.append(("delete_objects", who, status))
            want.append(("delete_objects", who, [model.delete(who, k) for k in keys]))
    bad = [(g, x) for g, x in zip(got, want, strict=True) if g != x]
    assert not bad, (bad, _document(w, bucket, model.stmts), model.acl, model.restrict,
                     model.ignore)


def _s(effect: str, principal: str, action: Any, resource: Any, condition: int = 0) -> Stmt:
    return Stmt(effect, principal, False, action, False, resource, False, condition)


# Fixed rows, run whatever EXAMPLES is: each covers one of atkpol17's fixes, which CI's 40
# derandomized examples may miss (a RestrictPublicBuckets still honouring ACL grants passed).
FIXED: list[tuple[list[Stmt], str, bool, bool]] = [
    # RestrictPublicBuckets with a public policy: the public-read ACLs give no one anything
    ([_s("Allow", "*", "s3:GetObject", "/priv/*")], "public-read", True, False),
    # ... nor does a statement naming another tenant
    ([_s("Allow", "*", "s3:GetObject", "/priv/*"), _s("Allow", "b", "s3:*", "/*")],
     "private", True, False),
    # an unpinned condition (NotIpAddress) leaves the policy public; a pinned one does not
    ([_s("Allow", "*", "s3:GetObject", "/priv/*", 5)], "public-read", True, False),
    ([_s("Allow", "*", "s3:GetObject", "/priv/*", 3)], "public-read", True, False),
    # DeleteObjects is authorized key by key: a Deny on some keys, an Allow of some keys
    ([_s("Deny", "*", "s3:DeleteObject", "/priv/*")], "private", False, False),
    ([_s("Allow", "b", "s3:DeleteObject", "/pub/*")], "private", False, False),
    # a missing key is 404 only to who may list the bucket (ListBucket denied: 403)
    ([_s("Deny", "*", "s3:ListBucket", "")], "public-read", False, False),
    # action names ignore case
    ([_s("Allow", "*", "S3:getobject", "/*")], "private", False, False),
    # atkpolicy21: principal keys tell anonymous callers and tenants apart; a fixed
    # aws:PrincipalAccount pins a "*" Allow (not public under RestrictPublicBuckets)
    ([_s("Allow", "*", "s3:GetObject", "/priv/*", 17),
      _s("Deny", "*", "s3:PutObject", "/*", 18)], "public-read-write", False, False),
    ([_s("Allow", "*", "s3:PutObject", "/*", 19), _s("Allow", "*", "s3:ListBucket", "", 20)],
     "private", True, False),
    # the time (Date and Numeric), the signature kind; ForAllValues holds on an absent key
    ([_s("Allow", "*", "s3:GetObject", "/*", 14), _s("Allow", "*", "s3:ListBucket", "", 15),
      _s("Deny", "*", "s3:DeleteObject", "/*", 21)], "public-read-write", False, False),
    ([_s("Deny", "*", "s3:ListBucket", "", 24), _s("Allow", "*", "s3:PutObject", "/*", 25)],
     "public-read", False, False),
]


def _fixed(test: Any) -> Any:
    for stmts, acl, restrict, ignore in reversed(FIXED):
        test = example(stmts=stmts, acl=acl, restrict=restrict, ignore=ignore)(test)
    return test


@_fixed
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, report_multiple_bugs=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(stmts=st.lists(_stmt(), max_size=3), acl=st.sampled_from(BUCKET_ACLS),
       restrict=st.booleans(), ignore=st.booleans())
def test_requests_match_the_policy_model(w: dict[str, Any], stmts: list[Stmt], acl: str,
                                         restrict: bool, ignore: bool) -> None:
    _check(w, _setup(w, stmts, acl, restrict, ignore))
