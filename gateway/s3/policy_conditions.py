"""IAM condition operators and the S3 condition keys a bucket policy may use.

`validate` refuses (MalformedPolicy) an operator or key the gateway does not evaluate, so a
policy is never stored half-understood. `holds` evaluates one statement's Condition block
against a request context: a mapping from key (lower-cased) to its values, absent when the
request does not carry the key. Semantics follow the IAM reference: every operator of a block
must hold, and within an operator every key; a key holds when any of the policy's values
matches (negated operators: when none does); a missing key makes a condition false, except
for negated operators, `...IfExists`, `Null` and `ForAllValues:` which treat it as AWS does.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from gateway.s3.errors import S3Error

Context = Mapping[str, Sequence[str]]

# Common AWS keys no request here carries (no VPC endpoints, organizations, MFA sessions,
# services calling on a principal's behalf): stored, and judged as AWS judges a request
# without them (a condition on one holds only negated, under ...IfExists or Null true).
ABSENT_KEYS = frozenset(k.lower() for k in (
    "aws:SourceVpc", "aws:SourceVpce", "aws:VpcSourceIp", "aws:SourceOwner",
    "aws:PrincipalOrgID", "aws:PrincipalOrgPaths", "aws:SourceOrgID", "aws:SourceOrgPaths",
    "aws:MultiFactorAuthPresent", "aws:MultiFactorAuthAge", "aws:CalledVia",
    "aws:CalledViaFirst", "aws:CalledViaLast",
))
# Condition keys the gateway fills in (lower-cased), and the absent ones; prefixes take a
# tag key after them.
KEYS = frozenset(k.lower() for k in (
    "aws:SecureTransport", "aws:SourceIp", "aws:Referer", "aws:UserAgent", "aws:CurrentTime",
    "aws:EpochTime", "aws:PrincipalType", "aws:PrincipalAccount", "aws:userid",
    "aws:username", "aws:SourceArn", "aws:SourceAccount", "aws:PrincipalArn",
    "aws:PrincipalIsAWSService", "aws:ViaAWSService", "aws:RequestedRegion",
    "s3:x-amz-acl", "s3:x-amz-grant-read", "s3:x-amz-grant-write", "s3:x-amz-grant-read-acp",
    "s3:x-amz-grant-write-acp", "s3:x-amz-grant-full-control",
    "s3:x-amz-server-side-encryption", "s3:x-amz-server-side-encryption-aws-kms-key-id",
    "s3:x-amz-server-side-encryption-customer-algorithm", "s3:x-amz-copy-source",
    "s3:x-amz-metadata-directive", "s3:x-amz-storage-class", "s3:x-amz-content-sha256",
    "s3:prefix", "s3:delimiter", "s3:max-keys", "s3:VersionId", "s3:RequestObjectTagKeys",
    "s3:signatureversion", "s3:authType", "s3:object-lock-mode",
    "s3:object-lock-retain-until-date", "s3:object-lock-legal-hold",
    "s3:object-lock-remaining-retention-days",
)) | ABSENT_KEYS
KEY_PREFIXES = ("s3:existingobjecttag/", "s3:requestobjecttag/")


@lru_cache(maxsize=4096)
def _segments(pattern: str, ignore_case: bool, one: bool) -> tuple[re.Pattern[str], ...]:
    """The pattern cut at its `*`s: each piece a fixed-width regex (`?` one character
    where `one`, else itself)."""
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return tuple(re.compile("".join("." if one and c == "?" else re.escape(c) for c in part),
                            flags) for part in pattern.split("*"))


def glob_match(pattern: str, value: str, ignore_case: bool = False, one: bool = True) -> bool:
    """`*` any run of characters (none too), `?` one (unless `one` is False: CORS rules,
    where only `*` is a wildcard). Each fixed piece between `*`s is
    placed at its leftmost fit, which is exact for globs and linear in the pieces: a regex
    `.*` per `*` backtracked exponentially (review22b: `s3:*?*?*?*?*?*?*?*?Z` as an Action
    held the event loop 90 s in PutBucketPolicy, longer ones for ever)."""
    first, *rest = _segments(pattern, ignore_case, one)
    if not rest:
        return first.fullmatch(value) is not None
    m = first.match(value)
    if m is None:
        return False
    pos = m.end()
    *middle, last = rest
    for seg in middle:
        m = seg.search(value, pos)
        if m is None:
            return False
        pos = m.end()
    start = len(value) - len(pattern.rsplit("*", 1)[1])  # the last piece ends the value
    return start >= pos and last.fullmatch(value, start) is not None


ARN_PARTS = 6  # arn:partition:service:region:account:resource (the resource may hold ':')


def arn_match(pattern: str, value: str) -> bool:
    """ArnEquals/ArnLike as AWS defines them: each of the six colon-separated components
    is compared on its own, wildcards matching within a component (so `*` in the account
    never spans into the resource); a value or pattern with fewer components matches
    nothing (review18c L5: the whole string was globbed, and `arn:aws:iam::111:*` matched
    `arn:aws:iam::111:x:root`)."""
    pp, vp = pattern.split(":", ARN_PARTS - 1), value.split(":", ARN_PARTS - 1)
    return (len(pp) == len(vp) == ARN_PARTS
            and all(glob_match(p, v) for p, v in zip(pp, vp, strict=True)))


# A number as a policy or request value: ASCII decimal, optional sign, fraction and exponent
# (float() alone also reads "1_000", "nan", "inf" and other scripts' digits).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _num(v: str) -> float | None:
    return float(v) if _NUMBER.fullmatch(v) else None


def _date(v: str) -> datetime | None:
    try:
        if re.fullmatch(r"[0-9]+", v):
            return datetime.fromtimestamp(int(v), UTC)
        d = datetime.fromisoformat(v.replace("Z", "+00:00"))
        return d if d.tzinfo else d.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def _ip(policy: str, value: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(policy, strict=False)
    except ValueError:
        return False


def _cmp(conv: Callable[[str], Any], test: Callable[[Any, Any], bool]
         ) -> Callable[[str, str], bool]:
    def match(policy: str, value: str) -> bool:
        p, v = conv(policy), conv(value)
        return p is not None and v is not None and test(v, p)
    return match


# operator -> (match(policy value, request value), negated)
_OPS: dict[str, tuple[Callable[[str, str], bool], bool]] = {
    "StringEquals": (lambda p, v: p == v, False),
    "StringNotEquals": (lambda p, v: p == v, True),
    "StringEqualsIgnoreCase": (lambda p, v: p.lower() == v.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda p, v: p.lower() == v.lower(), True),
    "StringLike": (lambda p, v: glob_match(p, v), False),
    "StringNotLike": (lambda p, v: glob_match(p, v), True),
    "NumericEquals": (_cmp(_num, lambda v, p: v == p), False),
    "NumericNotEquals": (_cmp(_num, lambda v, p: v == p), True),
    "NumericLessThan": (_cmp(_num, lambda v, p: v < p), False),
    "NumericLessThanEquals": (_cmp(_num, lambda v, p: v <= p), False),
    "NumericGreaterThan": (_cmp(_num, lambda v, p: v > p), False),
    "NumericGreaterThanEquals": (_cmp(_num, lambda v, p: v >= p), False),
    "DateEquals": (_cmp(_date, lambda v, p: v == p), False),
    "DateNotEquals": (_cmp(_date, lambda v, p: v == p), True),
    "DateLessThan": (_cmp(_date, lambda v, p: v < p), False),
    "DateLessThanEquals": (_cmp(_date, lambda v, p: v <= p), False),
    "DateGreaterThan": (_cmp(_date, lambda v, p: v > p), False),
    "DateGreaterThanEquals": (_cmp(_date, lambda v, p: v >= p), False),
    "Bool": (lambda p, v: p.lower() == v.lower(), False),
    "IpAddress": (_ip, False),
    "NotIpAddress": (_ip, True),
    "ArnEquals": (arn_match, False),
    "ArnLike": (arn_match, False),
    "ArnNotEquals": (arn_match, True),
    "ArnNotLike": (arn_match, True),
}


def _malformed(message: str) -> S3Error:
    return S3Error("MalformedPolicy", message)


def split(op: str) -> tuple[str, str, bool]:
    """'ForAnyValue:StringLikeIfExists' -> ('ForAnyValue', 'StringLike', True)."""
    qualifier, _, base = op.rpartition(":")
    if_exists = base.endswith("IfExists") and base != "IfExists"
    if if_exists:
        base = base[: -len("IfExists")]
    return qualifier, base, if_exists


def values(v: Any) -> list[str]:
    items = v if isinstance(v, list) else [v]
    out = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, str | int | float):
            out.append(str(item))
        else:
            raise _malformed("Invalid Condition value")
    return out


def known_key(key: str) -> bool:
    k = key.lower()
    return k in KEYS or (k.startswith(KEY_PREFIXES) and len(k) > k.index("/") + 1)


def validate(block: Any) -> None:
    """MalformedPolicy unless every operator and key of a Condition block is supported."""
    if not isinstance(block, dict) or not block:
        raise _malformed("Invalid Condition block")
    for op, keys in block.items():
        qualifier, base, if_exists = split(op)
        if qualifier not in ("", "ForAnyValue", "ForAllValues"):
            raise _malformed(f"Invalid Condition type : {op}")
        if base not in _OPS and base != "Null":
            raise _malformed(f"Invalid Condition type : {op}")
        if not isinstance(keys, dict) or not keys:
            raise _malformed(f"Invalid Condition block for {op}")
        for key, value in keys.items():
            if not known_key(key):
                raise _malformed(f"Policy has an invalid condition key: {key}")
            vals = values(value)
            _check_values(op, qualifier, base, if_exists, vals)


def _network(v: str) -> object:
    try:
        return ipaddress.ip_network(v, strict=False)
    except ValueError:
        return None


# operator family -> how one policy value of it must read (IAM Access Analyzer's "data type
# mismatch": a value its operator cannot read never matches, so a Deny on it never applies)
_READERS: dict[str, Callable[[str], object]] = {
    "Numeric": _num, "Date": _date, "IpAddress": _network, "NotIpAddress": _network}


def _check_values(op: str, qualifier: str, base: str, if_exists: bool,
                  vals: list[str]) -> None:
    """MalformedPolicy for a value its operator cannot read, and for the forms IAM Access
    Analyzer calls errors: Bool or Null with several values, Null with ...IfExists or a set
    qualifier (Null tests the key's presence, nothing else)."""
    if base in ("Null", "Bool"):
        if any(v.lower() not in ("true", "false") for v in vals):
            raise _malformed(f"{base} conditions take true or false")
        if len(vals) != 1:
            raise _malformed(f"{base} conditions take one value: {op}")
    if base == "Null" and (if_exists or qualifier):
        raise _malformed(f"Invalid Condition type : {op}")
    read = next((r for family, r in _READERS.items() if base.startswith(family)), None)
    if read is not None and any(read(v) is None for v in vals):
        raise _malformed(f"Invalid Condition value for {op}")


def holds(block: dict[str, Any], ctx: Context, deny: bool = False) -> bool:
    """Whether every condition of a (validated) block holds for the request context, for a
    Deny statement's block when `deny`. A tag key (`KEY_PREFIXES`) has one value on AWS; it
    has several only for tags whose keys differ in case (S3 keeps both), and which one the
    key means is ambiguous: a condition on it holds for a Deny when it holds for any one of
    them, for an Allow only when it holds for each (review21e M2: a negated Deny such as
    StringNotEquals .../Classification public was escaped by adding a twin with the allowed
    value, since a negated operator holds only when no value matches)."""
    for op, keys in block.items():
        qualifier, base, if_exists = split(op)
        for key, value in keys.items():
            k, vals = key.lower(), values(value)
            got = ctx.get(k)
            if got is not None and len(got) > 1 and k.startswith(KEY_PREFIXES):
                each = (_one(qualifier, base, if_exists, vals, [v]) for v in got)
                ok = any(each) if deny else all(each)
            else:
                ok = _one(qualifier, base, if_exists, vals, got)
            if not ok:
                return False
    return True


def holds_when_absent(op: str, value: Any) -> bool:
    """Whether one condition (`op` and its policy value) holds for a request whose context
    lacks the key: false for a positive operator, so its statement never applies then."""
    qualifier, base, if_exists = split(op)
    return _one(qualifier, base, if_exists, values(value), None)


def _one(qualifier: str, base: str, if_exists: bool, policy: list[str],
         got: Sequence[str] | None) -> bool:
    if base == "Null":
        return (got is None) == (policy[0].lower() == "true")
    if got is None:
        if if_exists or qualifier == "ForAllValues":
            return True
        return _OPS[base][1] and qualifier == ""
    match, negated = _OPS[base]

    def matches(v: str) -> bool:
        hit = any(match(p, v) for p in policy)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(matches(v) for v in got)
    if qualifier == "ForAnyValue":
        return any(matches(v) for v in got)
    if negated:
        return all(matches(v) for v in got)
    return any(matches(v) for v in got)
