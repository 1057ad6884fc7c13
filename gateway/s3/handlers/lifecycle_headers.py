"""What the bucket's lifecycle rules say about one object or upload, as S3 reports it.

- `x-amz-expiration: expiry-date="Fri, 23 Dec 2012 00:00:00 GMT", rule-id="RULE"` on PutObject,
  HeadObject, GetObject, CopyObject and CompleteMultipartUpload of a current version that an
  Expiration rule (Days or Date) selects; the earliest such rule, its id URL-encoded.
- `x-amz-abort-date` / `x-amz-abort-rule-id` on CreateMultipartUpload and ListParts of an
  upload an AbortIncompleteMultipartUpload rule selects (AWS sends them on no other call).

Dates are calendar dates, as S3 defines them: midnight UTC after N real days (or a rule's
Date), whatever `[lifecycle] day_seconds` says. That knob accelerates the worker for tests
and trials only (`storage.lifecycle_clock`); with it, the worker acts before the date sent.
"""

from __future__ import annotations

import string
from typing import Any
from urllib.parse import quote

from gateway.s3.handlers import S3Request
from gateway.s3.http import http_date
from storage.lifecycle_clock import REAL_DAY
from storage.lifecycle_rules import abort_rule, expiration_rule
from storage.records import ObjectVersion

# A rule id in x-amz-abort-rule-id as sent, but for what a header line cannot carry.
HEADER_SAFE = "".join(c for c in string.printable if c not in '%"\t\n\r\x0b\x0c')


def _rules(rq: S3Request) -> list[dict[str, Any]] | None:
    """The bucket's rules, from the record the request already read."""
    return rq.existing_bucket().config.get("lifecycle") or None


async def expiration_headers(rq: S3Request, v: ObjectVersion) -> dict[str, str]:
    """{"x-amz-expiration": ...} for a current version an Expiration rule selects, else {}."""
    rules = _rules(rq)
    if not rules:
        return {}
    found = expiration_rule(rules, v, REAL_DAY)
    if found is None:
        return {}
    when, rule_id = found
    return {"x-amz-expiration":
            f'expiry-date="{http_date(when)}", rule-id="{quote(rule_id, safe="")}"'}


async def abort_headers(rq: S3Request, key: str, initiated: float) -> dict[str, str]:
    """x-amz-abort-date and x-amz-abort-rule-id for an upload of `key` begun at `initiated`."""
    rules = _rules(rq)
    if not rules:
        return {}
    found = abort_rule(rules, key, initiated, REAL_DAY)
    if found is None:
        return {}
    return {"x-amz-abort-date": http_date(found[0]),
            "x-amz-abort-rule-id": quote(found[1], safe=HEADER_SAFE)}
