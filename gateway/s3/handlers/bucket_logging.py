"""PutBucketLogging / GetBucketLogging: a bucket's server access logging configuration.

Stored in the bucket record's `config["logging"]` as `{target_bucket, target_prefix, grants
[[kind, who, permission]], key_format "simple"|"partitioned", date_source}` (absent: off);
`storage.accesslog` stages the records of such a bucket and `storage/workers/accesslog.py`
delivers them. As AWS: only the bucket owner sets it; the target must exist
(InvalidTargetBucketForLogging), be in the source's region (CrossLocationLoggingProhibited),
not hold Object Lock default retention, and take no TargetGrants when it enforces bucket
ownership (AccessControlListNotSupported). A target of another tenant is refused with AWS's
same-owner InvalidTargetBucketForLogging unless its bucket policy lets the logging service
principal write there for this source (`gateway.s3.access_log.may_deliver`; AWS allows only
the same account). The source itself may be the target, as AWS allows: Tessera's own log
deliveries are not requests, so they log nothing and cannot loop.
"""

from __future__ import annotations

import time
from typing import Any
from xml.etree import ElementTree as ET

from aiohttp import web

from gateway.s3 import acl as acls
from gateway.s3.access_log import may_deliver
from gateway.s3.errors import S3Error, xml_document
from gateway.s3.handlers import S3Request, operation, xml_response
from gateway.s3.handlers.batch import read_small_body
from gateway.s3.xml import S3_NAMESPACE
from gateway.s3.xml_parse import (
    find_all,
    find_text,
    local_name,
    malformed,
    only_children,
    parse_document,
)
from storage.errors import NotFound
from storage.records import Bucket

# AWS's API reference writes this namespace in its BucketLoggingStatus examples.
_DOC_NAMESPACE = "http://doc.s3.amazonaws.com/2006-03-01"
LOG_PERMISSIONS = ("FULL_CONTROL", "READ", "WRITE")
DATE_SOURCES = ("EventTime", "DeliveryTime")


def _only_child(elem: ET.Element, name: str) -> ET.Element | None:
    found = find_all(elem, name)
    if len(found) > 1:
        raise malformed(f"more than one {name}")
    return found[0] if found else None


def parse_logging(body: bytes) -> dict[str, Any] | None:
    """The BucketLoggingStatus document: None (logging off) or the parsed LoggingEnabled,
    grants still as (kind, value, permission) with kind id / emailAddress / uri."""
    body = body.replace(_DOC_NAMESPACE.encode(), S3_NAMESPACE.encode())
    root = parse_document(body, "BucketLoggingStatus")
    only_children(root, ("LoggingEnabled",))
    enabled = _only_child(root, "LoggingEnabled")
    if enabled is None:
        return None
    only_children(enabled, ("TargetBucket", "TargetPrefix", "TargetGrants",
                            "TargetObjectKeyFormat"))
    target, prefix = find_text(enabled, "TargetBucket"), find_text(enabled, "TargetPrefix")
    if not target or prefix is None:
        raise malformed("LoggingEnabled needs TargetBucket and TargetPrefix")
    conf: dict[str, Any] = {"target_bucket": target, "target_prefix": prefix, "grants": [],
                            "key_format": "simple"}
    grants = _only_child(enabled, "TargetGrants")
    if grants is not None:
        only_children(grants, (), ("Grant",))
    for g in find_all(grants, "Grant") if grants is not None else []:
        conf["grants"].append(_grant(g))
    fmt = _only_child(enabled, "TargetObjectKeyFormat")
    if fmt is not None:
        only_children(fmt, ("SimplePrefix", "PartitionedPrefix"))
        simple, part = _only_child(fmt, "SimplePrefix"), _only_child(fmt, "PartitionedPrefix")
        if (simple is None) == (part is None):
            raise malformed("TargetObjectKeyFormat needs SimplePrefix or PartitionedPrefix")
        conf["explicit_format"] = True
        if part is not None:
            only_children(part, ("PartitionDateSource",))
            source = find_text(part, "PartitionDateSource") or "EventTime"
            if source not in DATE_SOURCES:
                raise malformed(f"PartitionDateSource {source!r}")
            conf["key_format"], conf["date_source"] = "partitioned", source
    return conf


def _grant(g: ET.Element) -> tuple[str, str, str]:
    grantees, perm = find_all(g, "Grantee"), find_text(g, "Permission")
    if len(grantees) != 1 or perm not in LOG_PERMISSIONS:
        raise malformed("Grant needs one Grantee and a Permission of FULL_CONTROL, READ, WRITE")
    ge = grantees[0]
    xtype = next((v for k, v in ge.attrib.items() if local_name(k) == "type"), None)
    for kind, tag, name in (("id", "ID", "CanonicalUser"),
                            ("emailAddress", "EmailAddress", "AmazonCustomerByEmail"),
                            ("uri", "URI", "Group")):
        value = find_text(ge, tag)
        if (xtype == name or xtype is None) and value:
            return kind, value, perm
    raise malformed("Grantee needs an ID, EmailAddress or URI matching its type")


async def logging_xml(rq: S3Request, conf: dict[str, Any] | None) -> bytes:
    """GetBucketLogging's BucketLoggingStatus document."""
    root = ET.Element("BucketLoggingStatus", {"xmlns": S3_NAMESPACE})
    if conf:
        en = ET.SubElement(root, "LoggingEnabled")
        ET.SubElement(en, "TargetBucket").text = conf["target_bucket"]
        if conf.get("grants"):
            grants = ET.SubElement(en, "TargetGrants")
            for kind, who, perm in conf["grants"]:
                g = ET.SubElement(grants, "Grant")
                if kind == "group":
                    ge = ET.SubElement(g, "Grantee", {"xmlns:xsi": acls.XSI,
                                                      "xsi:type": "Group"})
                    ET.SubElement(ge, "URI").text = who
                else:
                    gid, gname = await rq.cluster.tenants.identity(who)
                    ge = ET.SubElement(g, "Grantee", {"xmlns:xsi": acls.XSI,
                                                      "xsi:type": "CanonicalUser"})
                    ET.SubElement(ge, "ID").text = gid
                    ET.SubElement(ge, "DisplayName").text = gname
                ET.SubElement(g, "Permission").text = perm
        if conf.get("explicit_format"):  # in AWS's element order: before TargetPrefix
            fmt = ET.SubElement(en, "TargetObjectKeyFormat")
            if conf.get("key_format") == "partitioned":
                part = ET.SubElement(fmt, "PartitionedPrefix")
                ET.SubElement(part, "PartitionDateSource").text = conf["date_source"]
            else:
                ET.SubElement(fmt, "SimplePrefix")
        ET.SubElement(en, "TargetPrefix").text = conf["target_prefix"]
    return xml_document(root)


def _invalid_target(target: str, message: str | None = None) -> S3Error:
    return S3Error("InvalidTargetBucketForLogging", message, TargetBucket=target)


async def _check_target(rq: S3Request, source: Bucket, conf: dict[str, Any]) -> Bucket:
    name = conf["target_bucket"]
    try:
        target = await rq.cluster.buckets.get_any(name)
    except NotFound:
        raise _invalid_target(name, "The target bucket for logging does not exist") from None
    if target.region != source.region:
        raise S3Error("CrossLocationLoggingProhibited", SourceBucketLocation=source.region,
                      TargetBucketLocation=target.region)
    owner_id, _ = await rq.cluster.tenants.identity(source.tenant)
    if not may_deliver(target, conf["target_prefix"], source.name, source.tenant, owner_id):
        raise _invalid_target(name, "The owner for the bucket to be logged and the target "
                              "bucket must be the same.")
    lock = target.config.get("object_lock") or {}
    if lock.get("rule"):
        raise _invalid_target(name, "The target bucket for logging must not have an Object "
                              "Lock default retention period.")
    if conf["grants"] and target.config.get("ownership") == "BucketOwnerEnforced":
        raise S3Error("AccessControlListNotSupported",
                      "Target grants not allowed for bucket owner enforced buckets")
    return target


@operation("PutBucketLogging")
async def put_bucket_logging(rq: S3Request) -> web.StreamResponse:
    source = rq.existing_bucket()
    if rq.requester != source.tenant:  # the bucket owner only, whatever the policy says
        raise S3Error("AccessDenied")
    conf = parse_logging(await read_small_body(rq))
    if conf is not None:
        conf["grants"] = [[*await acls._grantee(rq.cluster.tenants, kind, value), perm]
                          for kind, value, perm in conf["grants"]]
        await _check_target(rq, source, conf)
        conf["since"] = time.time()  # requests before this are not logged
    await rq.cluster.buckets.update(rq.tenant, rq.bucket, logging=conf)
    return web.Response(status=200)


@operation("GetBucketLogging")
async def get_bucket_logging(rq: S3Request) -> web.StreamResponse:
    b = rq.existing_bucket()
    return xml_response(await logging_xml(rq, b.config.get("logging")))
