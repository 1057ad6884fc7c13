"""Object Lock operations and headers: bucket configuration, retention, legal hold.

The rules live in `storage/object_lock.py`; this module parses and renders what AWS sends
and expects (the `ObjectLockConfiguration`, `Retention` and `LegalHold` documents, the
`x-amz-object-lock-*` headers of PutObject / CopyObject / CreateMultipartUpload and of
GET/HEAD) and answers AWS's error for each refusal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from aiohttp import web
from multidict import CIMultiDict

from gateway.s3 import xml_parse
from gateway.s3.bodyrecv import cut_stalled
from gateway.s3.errors import S3Error, xml_document
from gateway.s3.handlers import S3Request, operation, xml_response
from gateway.s3.http import iso_instant, parse_iso_instant
from gateway.s3.request_keys import LOCK_BODY
from gateway.s3.xml import S3_NAMESPACE, format_timestamp
from storage import object_lock as ol
from storage.conditions import DeleteConditions
from storage.object_edits import DeleteResult
from storage.records import Bucket, ObjectVersion

MODE_HEADER = "x-amz-object-lock-mode"
UNTIL_HEADER = "x-amz-object-lock-retain-until-date"
HOLD_HEADER = "x-amz-object-lock-legal-hold"
BYPASS_HEADER = "x-amz-bypass-governance-retention"
MAX_DAYS = 36500  # AWS accepts a default retention of at most 100 years
_MISSING = "Bucket is missing Object Lock Configuration"
# The operations whose Object Lock condition keys are in their XML body (AWS's Service
# Authorization Reference: s3:object-lock-mode and s3:object-lock-retain-until-date for
# PutObjectRetention, s3:object-lock-legal-hold for PutObjectLegalHold): when the bucket
# policy names such a key (`body_keyed`), the body is read before the request is authorized
# (`condition_fields`), by anyone: so it is small and must come whole within a deadline.
BODY_KEYED_OPS = frozenset({"PutObjectRetention", "PutObjectLegalHold"})
LOCK_XML_BYTES = 8 * 1024  # a Retention document is ~200 bytes, a LegalHold one less


async def read_xml_body(rq: S3Request, limit: int | None = None) -> bytes:
    """The bounded XML body (imported late: handlers.buckets imports this module's users)."""
    from gateway.s3.handlers.buckets import MAX_XML_BYTES
    from gateway.s3.handlers.buckets import read_xml_body as read

    return await read(rq, limit=MAX_XML_BYTES if limit is None else limit)


def body_keyed(op: str, b: Bucket | None) -> bool:
    """Whether a request's condition keys are in its body: a `BODY_KEYED_OPS` operation on
    a bucket whose policy names an s3:object-lock-* key. Only then is its body read before
    it is authorized; without such a key the body changes no verdict, and it is authorized
    first, as any request (review21e M1: strangers' bodies are not read for nothing)."""
    return (op in BODY_KEYED_OPS and b is not None
            and "object-lock" in str(b.config.get("policy") or "").lower())


def check_lock_length(request: web.BaseRequest) -> None:
    """MalformedXML "too large" for a declared length over `LOCK_XML_BYTES`: checked before
    `100 Continue` is sent, so a body to be refused for its size is not asked for."""
    if request.content_length is not None and request.content_length > LOCK_XML_BYTES:
        from gateway.s3.handlers.buckets import xml_too_large

        raise xml_too_large()


def _no_lock() -> S3Error:
    return S3Error("InvalidRequest", _MISSING)


def _iso(ts: float) -> str:
    return format_timestamp(datetime.fromtimestamp(ts, UTC))


async def bypass(rq: S3Request, key: str, version_id: str | None) -> bool:
    """`x-amz-bypass-governance-retention: true` from a caller holding
    s3:BypassGovernanceRetention on `key` (gateway.s3.authz); the header alone bypasses
    nothing."""
    if rq.headers.get(BYPASS_HEADER, "").strip().lower() != "true":
        return False
    return await _holds(rq, "s3:BypassGovernanceRetention", key, version_id)


async def _holds(rq: S3Request, action: str, key: str, version_id: str | None) -> bool:
    from gateway.s3.authz import holds_permission  # authz imports the handlers package

    return await holds_permission(rq, action, key, version_id)


async def delete_judged(rq: S3Request, key: str, version_id: str | None,
                        conditions: DeleteConditions | None) -> DeleteResult:
    """DeleteObject(s) of `key` (`version_id`), each version it would remove for good
    refused while locked. Retentions are judged by the lock clock (`storage.lock_clock`),
    whose nodes are read only for a retention this gateway's clock says has ended
    (`object_lock.judged`): a delete marker, an unlocked version or one locked by this
    clock too reads none."""
    allowed = await bypass(rq, key, version_id)
    b = rq.existing_bucket()

    def run(now: float | None) -> Awaitable[DeleteResult]:
        return rq.cluster.objects.delete(
            b, key, version_id, conditions,
            lambda v: ol.check_delete(v.lock, allowed, now, ol.DeleteLocked))

    return await ol.judged(run, rq.cluster.objects.lock_clock.now)


# --- headers of writes and reads ------------------------------------------------------------


async def lock_from_headers(rq: S3Request) -> dict[str, Any]:
    """The lock a write's `x-amz-object-lock-*` headers ask for ({} when none are sent)."""
    h = rq.headers
    mode, until_raw, hold = h.get(MODE_HEADER), h.get(UNTIL_HEADER), h.get(HOLD_HEADER)
    if mode is None and until_raw is None and hold is None:
        return {}
    b = rq.existing_bucket()
    if ol.bucket_lock(b.config) is None:
        raise _no_lock()
    out: dict[str, Any] = {}
    if (mode is None) != (until_raw is None):
        raise S3Error("InvalidArgument", "x-amz-object-lock-retain-until-date and "
                      "x-amz-object-lock-mode must both be supplied",
                      ArgumentName=MODE_HEADER if mode is None else UNTIL_HEADER)
    if mode is not None and until_raw is not None:
        if mode not in ol.MODES:
            raise S3Error("InvalidArgument", "Unknown wormMode directive.",
                          ArgumentName=MODE_HEADER, ArgumentValue=mode)
        until = parse_iso_instant(until_raw)
        if until is None:
            raise S3Error("InvalidArgument", "The retain until date must be provided in "
                          "ISO 8601 format", ArgumentName=UNTIL_HEADER,
                          ArgumentValue=until_raw)
        if until <= time.time():
            raise S3Error("InvalidArgument", "The retain until date must be in the future!",
                          ArgumentName=UNTIL_HEADER, ArgumentValue=until_raw)
        out["mode"], out["until"] = mode, until
    if hold is not None:
        if hold not in ("ON", "OFF"):
            raise S3Error("InvalidArgument", "Legal Hold must be either of 'ON' or 'OFF'",
                          ArgumentName=HOLD_HEADER, ArgumentValue=hold)
        out["legal_hold"] = hold
    # AWS: a write that sets a retention needs s3:PutObjectRetention, one that sets a legal
    # hold s3:PutObjectLegalHold (a stranger with WRITE could otherwise plant versions the
    # bucket's tenant can never delete, nor its tenant be shredded)
    for field, action in (("mode", "s3:PutObjectRetention"),
                          ("legal_hold", "s3:PutObjectLegalHold")):
        if field in out and not await _holds(rq, action, rq.key, rq.version_id):
            raise S3Error("AccessDenied")
    return out


def require_integrity(rq: S3Request, lock: dict[str, Any], declared: bool,
                      request: str = "Put Object") -> None:
    """A PUT with Object Lock parameters (its own headers, or the bucket's default retention)
    must carry Content-MD5 or an x-amz-checksum-* header or trailer, as AWS requires; so
    must an UploadPart of an upload created with them (`lock`: the upload's), whose refusal
    AWS words "... for Put Part requests ..." (`request`)."""
    if declared:
        return
    if lock or ol.default_retention(rq.existing_bucket().config, time.time()):
        raise S3Error("InvalidRequest", "Content-MD5 OR x-amz-checksum- HTTP header is "
                      f"required for {request} requests with Object Lock parameters")


def lock_headers(v: ObjectVersion) -> dict[str, str]:
    """GET/HEAD response headers of a version's lock."""
    out = {}
    if v.lock.get("mode"):
        out[MODE_HEADER] = v.lock["mode"]
        out[UNTIL_HEADER] = _iso(float(v.lock["until"]))
    if v.lock.get("legal_hold"):
        out[HOLD_HEADER] = v.lock["legal_hold"]
    return out


# --- bucket configuration -------------------------------------------------------------------


def parse_configuration(body: bytes) -> dict[str, Any] | None:
    """ObjectLockConfiguration -> the default rule ({"mode", "days"|"years"}) or None."""
    root = xml_parse.parse_document(body, "ObjectLockConfiguration")
    xml_parse.only_children(root, ("ObjectLockEnabled", "Rule"))
    if xml_parse.find_text(root, "ObjectLockEnabled") != "Enabled":
        raise xml_parse.malformed("ObjectLockEnabled must be Enabled")
    rules = xml_parse.find_all(root, "Rule")
    if not rules:
        return None
    retention = xml_parse.find_all(rules[0], "DefaultRetention")
    if len(rules) > 1 or len(retention) != 1:
        raise xml_parse.malformed("one Rule with one DefaultRetention")
    xml_parse.only_children(rules[0], ("DefaultRetention",))
    d = retention[0]
    xml_parse.only_children(d, ("Mode", "Days", "Years"))
    mode = xml_parse.find_text(d, "Mode")
    days, years = xml_parse.find_text(d, "Days"), xml_parse.find_text(d, "Years")
    if mode not in ol.MODES or (days is None) == (years is None):
        raise xml_parse.malformed("DefaultRetention needs a Mode and one of Days or Years")
    raw = days if days is not None else years
    assert raw is not None
    n = xml_parse.parse_int(raw, "retention period")
    assert n is not None
    limit = MAX_DAYS if days is not None else MAX_DAYS // ol.YEAR_DAYS
    if not 1 <= n <= limit:
        raise S3Error("InvalidRetentionPeriod", "Default retention period must be a "
                      "positive integer value.", status=400)
    return {"mode": mode, "days" if days is not None else "years": n}


def _document(tag: str, **children: str) -> bytes:
    root = ET.Element(tag, xmlns=S3_NAMESPACE)
    for name, text in children.items():
        ET.SubElement(root, name).text = text
    return xml_document(root)


def configuration_xml(rule: dict[str, Any] | None) -> bytes:
    root = ET.Element("ObjectLockConfiguration", xmlns=S3_NAMESPACE)
    ET.SubElement(root, "ObjectLockEnabled").text = "Enabled"
    if rule:
        d = ET.SubElement(ET.SubElement(root, "Rule"), "DefaultRetention")
        ET.SubElement(d, "Mode").text = rule["mode"]
        if "days" in rule:
            ET.SubElement(d, "Days").text = str(rule["days"])
        else:
            ET.SubElement(d, "Years").text = str(rule["years"])
    return xml_document(root)


@operation("PutObjectLockConfiguration")
async def put_lock_configuration(rq: S3Request) -> web.StreamResponse:
    rule = parse_configuration(await read_xml_body(rq))
    rq.existing_bucket()

    def check(b: Bucket) -> None:  # on the record the update swaps (another gateway's suspend)
        if ol.bucket_lock(b.config) is None and b.versioning != "Enabled":
            raise S3Error("InvalidBucketState", "Versioning must be 'Enabled' on the bucket "
                          "to apply a Object Lock configuration")

    await rq.cluster.buckets.update(rq.tenant, rq.bucket, check,
                                    object_lock={"enabled": True, "rule": rule})
    return web.Response(status=200)


@operation("GetObjectLockConfiguration")
async def get_lock_configuration(rq: S3Request) -> web.StreamResponse:
    b = rq.existing_bucket()
    lock = ol.bucket_lock(b.config)
    if lock is None:
        raise S3Error("ObjectLockConfigurationNotFoundError", BucketName=rq.bucket)
    return xml_response(configuration_xml(lock.get("rule")))


# --- retention and legal hold of a version --------------------------------------------------


async def _locked_version(rq: S3Request) -> ObjectVersion:
    b = rq.existing_bucket()
    if ol.bucket_lock(b.config) is None:
        raise _no_lock()
    v = await rq.cluster.objects.head(rq.existing_bucket(), rq.key, rq.version_id)
    if v.delete_marker:
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this "
                      "resource.", headers={"x-amz-delete-marker": "true"})
    return v


async def _version_lock(rq: S3Request, field: str) -> dict[str, Any]:
    """The addressed version's lock; NoSuchObjectLockConfiguration when `field` is unset."""
    v = await _locked_version(rq)
    if not v.lock.get(field):
        raise S3Error("NoSuchObjectLockConfiguration")
    return v.lock


def parse_retention(body: bytes) -> tuple[str | None, float | None]:
    root = xml_parse.parse_document(body, "Retention")
    xml_parse.only_children(root, ("Mode", "RetainUntilDate"))
    mode, until_raw = xml_parse.find_text(root, "Mode"), xml_parse.find_text(root, "RetainUntilDate")
    if mode is None and until_raw is None:
        return None, None
    if mode not in ol.MODES or until_raw is None:
        raise xml_parse.malformed("Retention needs a valid Mode and a RetainUntilDate")
    until = parse_iso_instant(until_raw)
    if until is None:
        raise xml_parse.malformed(f"RetainUntilDate {until_raw!r}")
    if until <= time.time():
        raise S3Error("InvalidArgument", "The retain until date must be in the future!",
                      ArgumentName="RetainUntilDate", ArgumentValue=until_raw)
    return mode, until


def parse_legal_hold(body: bytes) -> str:
    root = xml_parse.parse_document(body, "LegalHold")
    xml_parse.only_children(root, ("Status",))
    status = xml_parse.find_text(root, "Status")
    if status not in ("ON", "OFF"):
        raise xml_parse.malformed("LegalHold Status must be ON or OFF")
    return status


async def _lock_body(rq: S3Request) -> tuple[Any, CIMultiDict[str]]:
    """What a `BODY_KEYED_OPS` request's body asks ((mode, until) or a legal hold status),
    and the request's headers as its condition keys read them: its own x-amz-object-lock-*
    headers (no part of this operation) replaced by the body's values. Read once."""
    memo = rq.request.get(LOCK_BODY)
    if memo is not None:
        return memo
    try:  # whole within the head's deadline again: 1 byte per idle limit holds it no longer
        async with asyncio.timeout(rq.cfg.header_timeout_s):
            body = await read_xml_body(rq, LOCK_XML_BYTES)
    except TimeoutError:
        cut_stalled(rq.request)  # its rest is not waited for: the connection ends
        raise S3Error("RequestTimeout") from None
    fields = CIMultiDict(rq.headers)
    for name in (MODE_HEADER, UNTIL_HEADER, HOLD_HEADER):
        fields.popall(name, None)
    asked: Any
    if rq.op == "PutObjectRetention":
        asked = mode, until = parse_retention(body)
        if mode is not None and until is not None:
            fields[MODE_HEADER], fields[UNTIL_HEADER] = mode, iso_instant(until)
    else:
        asked = fields[HOLD_HEADER] = parse_legal_hold(body)
    memo = rq.request[LOCK_BODY] = (asked, fields)
    return memo


async def condition_fields(rq: S3Request) -> CIMultiDict[str]:
    """The headers a `BODY_KEYED_OPS` request is authorized on (`gateway.s3.authz.context`):
    its body is read and parsed first, as AWS must to judge those keys."""
    return (await _lock_body(rq))[1]


@operation("PutObjectRetention")
async def put_retention(rq: S3Request) -> web.StreamResponse:
    mode, until = (await _lock_body(rq))[0]
    v = await _locked_version(rq)
    allowed = await bypass(rq, rq.key, rq.version_id)

    def run(now: float | None) -> Awaitable[ObjectVersion]:  # the lock as the compare-and-swap read it
        return rq.cluster.objects.update_version(
            rq.existing_bucket(), rq.key, v.version_id,
            lambda cur: ol.check_retention_change(cur.lock, mode, until, allowed, now),
            edit=lambda cur: {"lock": ol.with_retention(cur.lock, mode, until)})

    await ol.judged(run, rq.cluster.objects.lock_clock.now)  # (lengthening reads no clock)
    return web.Response(status=200)


@operation("GetObjectRetention")
async def get_retention(rq: S3Request) -> web.StreamResponse:
    lock = await _version_lock(rq, "mode")
    return xml_response(_document("Retention", Mode=lock["mode"],
                                  RetainUntilDate=_iso(float(lock["until"]))))


@operation("PutObjectLegalHold")
async def put_legal_hold(rq: S3Request) -> web.StreamResponse:
    status = (await _lock_body(rq))[0]
    v = await _locked_version(rq)
    await rq.cluster.objects.update_version(  # keeps a retention set meanwhile
        rq.existing_bucket(), rq.key, v.version_id,
        edit=lambda cur: {"lock": {**cur.lock, "legal_hold": status}})
    return web.Response(status=200)


@operation("GetObjectLegalHold")
async def get_legal_hold(rq: S3Request) -> web.StreamResponse:
    lock = await _version_lock(rq, "legal_hold")
    return xml_response(_document("LegalHold", Status=lock["legal_hold"]))
