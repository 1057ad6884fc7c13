"""Server access logging on the S3 request path: one record per request, and who may receive logs.

`observe` is the one step at the end of a request (`gateway.s3.server`): it turns what the
request left in its `web.Request` (the routed endpoint, the requester, the error code) into
a `storage.accesslog.AccessRecord` and queues it; nothing else happens on the request path.
Operations are named as AWS's logs name them (`REST.PUT.OBJECT`, `REST.GET.BUCKET`,
`REST.GET.LOGGING_STATUS`...); as AWS does, DeleteObjects also logs one `BATCH.DELETE.OBJECT`
record per key, and a copy one `REST.COPY.OBJECT_GET` record in the source bucket.

`may_deliver` is the log delivery's permission check on a target bucket, evaluated as the
logging service principal `logging.s3.amazonaws.com` with `aws:SourceArn` (the source
bucket) and `aws:SourceAccount` (its owner's canonical id): a target of the source's own
tenant receives logs unless its policy denies that principal; another tenant's target only
when its policy allows it `s3:PutObject` on `arn:aws:s3:::target/TargetPrefix`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

from gateway.s3 import policy
from gateway.s3.copy_source import split_copy_source
from gateway.s3.request_keys import (
    ACL_REQUIRED,
    BODY_DONE,
    BUCKET_RECORD,
    ENDPOINT,
    ERROR_CODE,
    FIRST_BYTE,
    LOG_BATCH,
    REQUEST_ID,
    REQUESTER_ID,
)
from gateway.s3.router import Endpoint
from storage.accesslog import AccessLogBuffer, AccessRecord
from storage.records import Bucket

LOGGING_SERVICE = "logging.s3.amazonaws.com"
SERVICE_IDS = frozenset({policy.service_id(LOGGING_SERVICE)})

# AWS operation name -> the resource part of REST.<METHOD>.<RESOURCE> in AWS's logs.
_RESOURCE = {
    "GetObject": "OBJECT", "HeadObject": "OBJECT", "PutObject": "OBJECT",
    "DeleteObject": "OBJECT", "PostObject": "OBJECT", "CopyObject": "OBJECT",
    "ListObjects": "BUCKET", "ListObjectsV2": "BUCKET", "HeadBucket": "BUCKET",
    "CreateBucket": "BUCKET", "DeleteBucket": "BUCKET",
    "ListObjectVersions": "BUCKETVERSIONS", "ListMultipartUploads": "UPLOADS",
    "CreateMultipartUpload": "UPLOADS", "UploadPart": "PART", "UploadPartCopy": "PART",
    "CompleteMultipartUpload": "UPLOAD", "AbortMultipartUpload": "UPLOAD",
    "ListParts": "UPLOAD", "DeleteObjects": "MULTI_OBJECT_DELETE",
    "GetBucketLogging": "LOGGING_STATUS", "PutBucketLogging": "LOGGING_STATUS",
    "GetBucketPolicy": "BUCKETPOLICY", "PutBucketPolicy": "BUCKETPOLICY",
    "DeleteBucketPolicy": "BUCKETPOLICY", "GetBucketAcl": "ACL", "PutBucketAcl": "ACL",
    "GetObjectAcl": "ACL", "PutObjectAcl": "ACL", "GetObjectTagging": "OBJECT_TAGGING",
    "PutObjectTagging": "OBJECT_TAGGING", "DeleteObjectTagging": "OBJECT_TAGGING",
    "GetBucketTagging": "TAGGING", "PutBucketTagging": "TAGGING",
    "DeleteBucketTagging": "TAGGING", "GetBucketLocation": "LOCATION",
    "GetBucketVersioning": "VERSIONING", "PutBucketVersioning": "VERSIONING",
    "GetBucketLifecycleConfiguration": "LIFECYCLE",
    "PutBucketLifecycleConfiguration": "LIFECYCLE", "DeleteBucketLifecycle": "LIFECYCLE",
    "GetBucketCors": "CORS", "PutBucketCors": "CORS", "DeleteBucketCors": "CORS",
    "GetBucketEncryption": "ENCRYPTION", "PutBucketEncryption": "ENCRYPTION",
    "DeleteBucketEncryption": "ENCRYPTION", "RestoreObject": "OBJECT",
    "GetObjectAttributes": "OBJECT_ATTRIBUTES", "PreflightRequest": "PREFLIGHT",
}


def operation_name(op: str, method: str) -> str:
    """AWS's log name of an operation: REST.<METHOD>.<RESOURCE>."""
    if op == "CopyObject":
        return "REST.COPY.OBJECT"
    if op == "UploadPartCopy":
        return "REST.COPY.PART"
    if op == "RestoreObject":
        return "REST.POST.RESTORE"
    resource = _RESOURCE.get(op)
    if resource is None:  # Get/Put/Delete + the configuration's name, as AWS's others
        name = op.removeprefix("Get").removeprefix("Put").removeprefix("Delete")
        name = name.removeprefix("Bucket").removesuffix("Configuration")
        resource = "".join("_" + c if c.isupper() and i else c
                           for i, c in enumerate(name)).upper() or "UNKNOWN"
    return f"REST.{method.upper()}.{resource}"


SIGNATURE_PARAMS = frozenset({"x-amz-signature", "signature"})  # SigV4's and SigV2's, lowered
WITHHELD = "REDACTED"


def logged_target(raw_path: str) -> str:
    """The request target as the log shows it: a query-string signature's value withheld.

    A presigned URL's signature is a credential until the URL expires (up to 7 days), and a
    log target may be another tenant's bucket; AWS redacts X-Amz-Signature in server access
    logs. Names are compared decoded and without case (`X-Amz-Signatur%65` is the same
    parameter to the query parser); everything else stays as sent."""
    path, sep, query = raw_path.partition("?")
    if not sep:
        return raw_path
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        if eq and unquote(name).lower() in SIGNATURE_PARAMS:
            part = f"{name}={WITHHELD}"
        parts.append(part)
    return f"{path}?{'&'.join(parts)}"


def _signature(request: web.Request) -> tuple[str, str]:
    """(signature version, auth type) as AWS logs them."""
    h, q = request.headers, request.query
    auth = h.get("Authorization", "")
    if auth:
        return ("SigV4" if auth.startswith("AWS4-") else "SigV2"), "AuthHeader"
    if "X-Amz-Signature" in q:
        return "SigV4", "QueryString"
    if "Signature" in q:
        return "SigV2", "QueryString"
    return "-", "-"


def _object_size(request: web.Request, resp: web.StreamResponse, op: str) -> int | None:
    if op in ("PutObject", "UploadPart", "PostObject"):
        raw = request.headers.get("x-amz-decoded-content-length") or request.content_length
        return int(raw) if raw is not None and str(raw).isdigit() else None
    if op in ("GetObject", "HeadObject") and resp.status < 300:
        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
        if total.isdigit():
            return int(total)
        return resp.content_length
    return None


def turnaround_ms(request: web.Request, started: float) -> int:
    """AWS's turn-around time: from the last byte of the request received (the body's end
    when one was streamed, else the request's arrival) to the first byte of the response
    (its headers; a response not sent yet is sent right after this step)."""
    first = request.get(FIRST_BYTE) or time.perf_counter()
    last_in = max(started, request.get(BODY_DONE) or started)
    return max(0, int((first - last_in) * 1000))


def observe(buffer: AccessLogBuffer, request: web.Request, resp: web.StreamResponse,
            started_wall: float, started: float, host_id: str) -> None:
    """Queue the access-log record of a finished request that named a bucket.

    A bucket whose record, as the request read it (`s3_bucket_record`), has no logging
    configuration gets no record: staging would drop it anyway, since a configuration
    enabled later logs only requests from its `since` on, which is after the request's
    read, hence after its start. A copy's record in its source bucket is still made."""
    ep = request.get(ENDPOINT)
    if ep is None or ep.bucket is None:
        return
    b: Bucket | None = request.get(BUCKET_RECORD)
    logged = b is None or b.name != ep.bucket or bool(b.config.get("logging"))
    copy = request.headers.get("x-amz-copy-source") \
        if ep.op in ("CopyObject", "UploadPartCopy") else None
    if not logged and not copy:
        return
    record = _record(request, resp, ep, started_wall, started, host_id)
    if logged:
        buffer.add(record)
        for key, vid, code in request.get(LOG_BATCH) or ():  # DeleteObjects, per key
            buffer.add(replace(record, operation="BATCH.DELETE.OBJECT",
                               key=quote(key, safe="/"),
                               status=204 if code is None else resp.status, bytes_sent=0,
                               error_code=code or "-", version_id=vid or "-",
                               object_size=None))
    if copy:  # the read of the source
        src_bucket, src_key, _ = split_copy_source(copy)
        if src_bucket:
            buffer.add(replace(record, bucket=src_bucket, operation="REST.COPY.OBJECT_GET",
                               key=quote(src_key, safe="/") or "-", bytes_sent=0,
                               object_size=None, version_id="-"))


def _record(request: web.Request, resp: web.StreamResponse, ep: Endpoint, started_wall: float,
            started: float, host_id: str) -> AccessRecord:
    """The request's record in its own bucket."""
    sig, auth_type = _signature(request)
    sent = 0 if request.method == "HEAD" else (resp.content_length or 0)
    version = resp.headers.get("x-amz-version-id") or ep.params.get("versionId") or "-"
    return AccessRecord(
        bucket=ep.bucket, time=started_wall, remote_ip=request.remote or "-",
        requester=request.get(REQUESTER_ID) or "-",
        request_id=request.get(REQUEST_ID, "-"),
        operation=operation_name(ep.op, request.method),
        key=quote(ep.key, safe="/") if ep.key is not None else "-",
        request_uri=f"{request.method} {logged_target(request.raw_path)} "
                    f"HTTP/{request.version.major}.{request.version.minor}",
        status=resp.status, error_code=request.get(ERROR_CODE) or "-",
        bytes_sent=sent, object_size=_object_size(request, resp, ep.op),
        total_ms=int((time.perf_counter() - started) * 1000),
        turnaround_ms=turnaround_ms(request, started),
        referer=request.headers.get("Referer", "-"),
        user_agent=request.headers.get("User-Agent", "-"), version_id=version,
        host_id=host_id, signature_version=sig,
        cipher_suite="-", auth_type=auth_type, host_header=request.host or "-",
        tls_version="-", access_point_arn="-",
        acl_required=bool(request.get(ACL_REQUIRED)))


def may_deliver(target: Bucket, prefix: str, source_bucket: str, source_tenant: str,
                source_owner_id: str) -> bool:
    """Whether the log delivery may write under `prefix` in `target` for `source_bucket`
    (the resource checked is `arn:aws:s3:::target/prefix`, at PutBucketLogging and at each
    delivery alike, so a configuration accepted is one whose logs are delivered)."""
    text = target.config.get("policy")
    sts = policy.statements(str(text)) if text else []
    ctx: Mapping[str, Any] = {"aws:sourcearn": [policy.resource_of(source_bucket, None)],
                              "aws:sourceaccount": [source_owner_id],
                              "aws:principalisawsservice": ["true"],
                              "aws:viaawsservice": ["false"],
                              "aws:requestedregion": [target.region]}
    verdict = policy.evaluate(sts, "s3:PutObject", policy.resource_of(target.name, prefix),
                              SERVICE_IDS, ctx) if sts else None
    if target.tenant == source_tenant:
        return verdict != "Deny"
    return verdict == "Allow"
