"""Browser-based uploads: `POST /bucket` with a multipart/form-data body, as AWS documents.

The form's fields before `file` are read (at most 20 KB, AWS's limit); fields after it are
ignored. A form with a `policy` is signed: SigV4 (`x-amz-algorithm`, `x-amz-credential`,
`x-amz-date`, `x-amz-signature`: hex HMAC-SHA256 of the base64 policy with the SigV4 signing
key) or SigV2 (`AWSAccessKeyId`, `signature`: base64 HMAC-SHA1 of the base64 policy). The
policy is a JSON document with `expiration` and `conditions`: `{"field": "value"}` and
`["eq", "$field", "value"]` (exact), `["starts-with", "$field", "prefix"]` and
`["content-length-range", min, max]`; every form field must be covered by a condition except
the signature fields, `file`, `policy`, `x-amz-checksum-*` and `x-ignore-*` fields. A form
without a policy is anonymous. Then the request is authorized as a PutObject
(`gateway.s3.authz`) and the file is stored like a PUT with the form's fields as headers (checksum and Object
Lock fields checked and applied as PutObject's headers are).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree as ET

from aiohttp import web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.s3 import authz, checksums, sse
from gateway.s3.body import content_md5_hex
from gateway.s3.bodyrecv import cut_stalled
from gateway.s3.errors import S3Error, xml_document
from gateway.s3.handlers import S3Request
from gateway.s3.handlers.access import write_acl
from gateway.s3.handlers.object_lock import lock_from_headers, require_integrity
from gateway.s3.handlers.objects import put_options
from gateway.s3.header_values import check_header_values
from gateway.s3.request_keys import FORM_SIGNATURE
from gateway.s3.router import KEY_BYTES_MAX, Endpoint
from gateway.s3.sigv4 import AuthResult
from gateway.s3.sigv4_canonical import signing_key
from gateway.s3.xml_parse import parse_tagging
from storage import jsondoc
from storage.cluster import Cluster
from storage.config import GatewayConfig
from storage.records import Bucket, ObjectVersion

PRE_DATA_MAX = 20 * 1024  # the form's bytes before the file: fields' values, names, heads
PART_FRAMING = 8  # a part's bytes besides its boundary and header lines: '--' and CRLF
# around the boundary, the blank line ending its head and the CRLF ending its value
PART_MIN = 48  # what a part costs at least: a form field's Content-Disposition line alone is
# more, so only parts no browser sends (no head, a one-letter boundary) are counted up to it
AUTH_FIELDS = frozenset({"awsaccesskeyid", "signature", "policy", "x-amz-signature", "file",
                         "x-amz-security-token"})
CHUNK = 1 << 20


@dataclass
class PostRequest(S3Request):
    """An S3Request whose 'headers' are the form's fields (Content-Type, x-amz-meta-*...)."""

    form_headers: CIMultiDictProxy[str] = field(
        default_factory=lambda: CIMultiDictProxy(CIMultiDict()))

    @property
    def headers(self):  # type: ignore[no-untyped-def]
        return self.form_headers


def _fail(message: str) -> S3Error:
    return S3Error("AccessDenied", f"Invalid according to Policy: {message}")


def _bad_policy(message: str) -> S3Error:
    return S3Error("InvalidPolicyDocument", f"Invalid Policy: {message}")


async def _read_fields(request: web.Request) -> tuple[dict[str, str], Any, str | None]:
    """(fields by lower-cased name, the file part, its filename)."""
    if not request.content_type.startswith("multipart/form-data"):
        raise S3Error("RequestIsNotMultiPartContent")
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError):
        raise S3Error("MalformedPOSTRequest") from None
    fields: dict[str, str] = {}
    used = 0
    framing = PART_FRAMING + len(parse_mimetype(request.headers.get("Content-Type", ""))
                                 .parameters.get("boundary", ""))
    while True:
        try:
            part = await reader.next()
        except (ValueError, HttpProcessingError):  # a part's head no HTTP parser takes
            raise S3Error("MalformedPOSTRequest") from None
        if part is None:
            raise S3Error("InvalidArgument", "POST requires exactly one file upload per "
                          "request.", ArgumentName="file", ArgumentValue="0")
        name = (getattr(part, "name", None) or "").lower()
        if name == "file":
            return fields, part, getattr(part, "filename", None)
        # Each part's head counts, not only its value: empty fields cost nothing else, and
        # parsing each costs the event loop ~0.5 ms (10,000 blocked a worker for 6 s).
        # Counted as sent (AWS's limit is on the form's bytes before the file), so that a
        # form under it is never refused for how its boundary is spelled.
        used += max(PART_MIN, framing + sum(len(k) + len(v) + 4 for k, v in part.headers.items()))
        if used > PRE_DATA_MAX:
            raise _pre_data_too_large()
        data = bytearray()
        while chunk := await part.read_chunk(4096):  # type: ignore[union-attr]
            data += chunk
            used += len(chunk)
            if used > PRE_DATA_MAX:
                raise _pre_data_too_large()
        try:
            fields[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            raise S3Error("MalformedPOSTRequest") from None


def _pre_data_too_large() -> S3Error:
    """AWS's refusal of a form over PRE_DATA_MAX bytes before its file, naming the limit."""
    return S3Error("MaxPostPreDataLengthExceeded", MaxPostPreDataLengthBytes=str(PRE_DATA_MAX))


def _authenticate(fields: dict[str, str], secret_of: Any, region: str,
                  ) -> tuple[str | None, dict[str, Any] | None]:
    """(access key, decoded policy) of a signed form; (None, None) for an anonymous one."""
    policy_b64 = fields.get("policy")
    if token := fields.get("x-amz-security-token"):  # temporary credentials: never issued
        raise S3Error("InvalidToken", **{"Token-0": token})
    if policy_b64 is None:
        return None, None
    v4 = "x-amz-algorithm" in fields or "x-amz-credential" in fields
    if v4:
        if fields.get("x-amz-algorithm") != "AWS4-HMAC-SHA256":
            raise S3Error("InvalidArgument", "Only AWS4-HMAC-SHA256 is supported",
                          ArgumentName="x-amz-algorithm",
                          ArgumentValue=fields.get("x-amz-algorithm", ""))
        for name in ("x-amz-credential", "x-amz-date", "x-amz-signature"):
            if name not in fields:
                raise S3Error("InvalidArgument", f"Bucket POST must contain a field named "
                              f"'{name}'.", ArgumentName=name, ArgumentValue="")
        parts = fields["x-amz-credential"].split("/")
        if len(parts) != 5 or parts[4] != "aws4_request" or parts[3] != "s3":
            raise S3Error("InvalidArgument", "Invalid credential", ArgumentName=
                          "x-amz-credential", ArgumentValue=fields["x-amz-credential"])
        ak, date, cred_region = parts[0], parts[1], parts[2]
        if not fields["x-amz-date"].startswith(date):
            raise S3Error("InvalidArgument", "Credential date does not match x-amz-date",
                          ArgumentName="x-amz-date", ArgumentValue=fields["x-amz-date"])
        if cred_region != region:  # AWS's answer to a form signed for another region
            raise S3Error("InvalidArgument", f"the region '{cred_region}' is wrong; "
                          f"expecting '{region}'", ArgumentName="X-Amz-Credential",
                          ArgumentValue=fields["x-amz-credential"], Region=region)
        secret = secret_of(ak)
        if secret is None:
            raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=ak)
        key = signing_key(secret, date, region, "s3")
        expected = hmac.new(key, policy_b64.encode(), hashlib.sha256).hexdigest()
        given = fields["x-amz-signature"]
    else:
        if "awsaccesskeyid" not in fields:
            raise S3Error("InvalidArgument", "Bucket POST must contain a field named "
                          "'AWSAccessKeyId'.  If it is specified, please check the order of "
                          "the fields.", ArgumentName="AWSAccessKeyId", ArgumentValue="")
        if "signature" not in fields:
            raise S3Error("InvalidArgument", "Bucket POST must contain a field named "
                          "'Signature'.  If it is specified, please check the order of the "
                          "fields.", ArgumentName="Signature", ArgumentValue="")
        ak = fields["awsaccesskeyid"]
        secret = secret_of(ak)
        if secret is None:
            raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=ak)
        expected = base64.b64encode(hmac.new(secret.encode(), policy_b64.encode(),
                                             hashlib.sha1).digest()).decode()
        given = fields["signature"]
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise S3Error("SignatureDoesNotMatch")
    try:
        doc = jsondoc.loads(base64.b64decode(policy_b64, validate=True))
    except (binascii.Error, ValueError):
        raise _bad_policy("Could not parse the policy document") from None
    if not isinstance(doc, dict):
        raise _bad_policy("Could not parse the policy document")
    return ak, doc


@dataclass
class _Limits:
    low: int = 0
    high: int | None = None


def _check_policy(doc: dict[str, Any], fields: dict[str, str], bucket: str) -> _Limits:
    """Apply the policy's expiration and conditions to the form; the size range it sets."""
    exp = doc.get("expiration")
    if not isinstance(exp, str):
        raise _bad_policy("Policy missing expiration.")
    try:
        when = datetime.fromisoformat(exp.replace("Z", "+00:00"))
    except ValueError:
        raise _bad_policy(f"Invalid 'expiration' value: '{exp}'") from None
    if when.tzinfo is None or "T" not in exp:
        raise _bad_policy(f"Invalid 'expiration' value: '{exp}'")
    if when.timestamp() < time.time():
        raise _fail("Policy expired.")
    conds = doc.get("conditions")
    if not isinstance(conds, list):
        raise _bad_policy("Policy missing conditions.")
    values = dict(fields)
    values["bucket"] = bucket
    covered = {"bucket"}
    limits = _Limits()
    for c in conds:
        if isinstance(c, dict):
            if len(c) != 1:
                raise _bad_policy("Each condition must hold one field")
            (name, want), = c.items()
            op, fname = "eq", str(name).lower()
        elif isinstance(c, list) and c and isinstance(c[0], str):
            op = c[0].lower()
            if op == "content-length-range":
                if len(c) != 3 or not all(isinstance(x, int) and not isinstance(x, bool)
                                          and x >= 0 for x in c[1:]):
                    raise _bad_policy("Invalid content-length-range condition")
                limits = _Limits(c[1], c[2])
                continue
            if op not in ("eq", "starts-with") or len(c) != 3 or not isinstance(c[1], str) \
                    or not c[1].startswith("$"):
                raise _bad_policy(f"Invalid condition: {c!r}")
            fname, want = c[1][1:].lower(), c[2]
        else:
            raise _bad_policy(f"Invalid condition: {c!r}")
        if not isinstance(want, str):
            raise _bad_policy(f"Invalid condition value for {fname}")
        covered.add(fname)
        got = values.get(fname)
        if got is None:
            raise _fail(f'Policy Condition failed: ["{op}", "${fname}", "{want}"]')
        if fname == "bucket" and got != want:
            raise _fail(f'Policy Condition failed: ["eq", "$bucket", "{want}"]')
        ok = got.startswith(want) if op == "starts-with" else got == want
        if op == "starts-with" and fname == "content-type":
            ok = all(v.strip().startswith(want) for v in got.split(","))
        if not ok:
            raise _fail(f'Policy Condition failed: ["{op}", "${fname}", "{want}"]')
    for name in fields:
        if name in AUTH_FIELDS or name in covered or name.startswith(("x-ignore-",
                                                                      "x-amz-checksum-")):
            continue
        raise _fail(f"Extra input fields: {name}")
    return limits


def _headers(fields: dict[str, str]) -> CIMultiDict[str]:
    """The form's fields as the request headers a PUT would carry."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in fields.items():
        if name in AUTH_FIELDS or name.startswith("x-ignore-") or name in (
                "x-amz-algorithm", "x-amz-credential", "x-amz-date", "key",
                "success_action_status", "success_action_redirect", "redirect", "bucket"):
            continue
        if name == "acl":
            out["x-amz-acl"] = value
        elif name == "tagging":
            tags = parse_tagging(value.encode())
            out["x-amz-tagging"] = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}"
                                            for k, v in tags.items())
        elif name in ("content-type", "cache-control", "content-disposition",
                      "content-encoding", "expires", "content-md5") or name.startswith("x-amz-"):
            out[name] = value
    return out


async def serve(cluster: Cluster, cfg: GatewayConfig, request: web.Request, ep: Endpoint,
                rid: str, b: Bucket | None) -> web.StreamResponse:
    """Handle one POST upload end to end (authenticate, authorize, store, answer); `b` is
    the bucket's record, read once by the request pipeline (None: no such bucket)."""
    try:  # the fields before the file are read before anyone is known: whole within the
        # head's deadline again (1 byte per idle limit held a connection for hours)
        async with asyncio.timeout(cfg.header_timeout_s):
            fields, part, filename = await _read_fields(request)
    except TimeoutError:
        cut_stalled(request)  # its rest is not waited for: the connection ends
        raise S3Error("RequestTimeout") from None
    creds: dict[str, Any] = {}

    async def lookup(ak: str) -> None:
        cred = await cluster.tenants.credential(ak)
        creds[ak] = cred if cred is not None and cred.role == "tenant" else None

    for name in ("awsaccesskeyid", "x-amz-credential"):
        if name in fields:
            await lookup(fields[name].split("/", 1)[0])
    ak, doc = _authenticate(fields, lambda a: creds[a].secret_key if creds.get(a) else None,
                            cfg.region)
    assert ep.bucket is not None
    if "key" not in fields:
        raise S3Error("InvalidArgument", "Bucket POST must contain a field named 'key'.  If it "
                      "is specified, please check the order of the fields.",
                      ArgumentName="key", ArgumentValue="")
    key = fields["key"] = fields["key"].replace("${filename}", filename or "")
    limits = _check_policy(doc, fields, ep.bucket) if doc is not None else _Limits()
    check_header_values((n, fields[n]) for n in ("success_action_redirect", "redirect")
                        if n in fields)  # the answer's Location
    if not key or len(key.encode()) > KEY_BYTES_MAX:
        raise S3Error("KeyTooLongError" if key else "InvalidArgument",
                      ArgumentName="key", ArgumentValue=key)
    requester = None
    if ak is not None:
        request[FORM_SIGNATURE] = ("AWS4-HMAC-SHA256" if "x-amz-algorithm" in fields
                                   else "AWS")  # its s3:signatureversion (authz.context)
        cred = creds[ak]
        cid, _ = await cluster.tenants.identity(cred.tenant)
        requester = authz.Requester(cred.tenant, cid, ak)
    headers = _headers(fields)
    ep = Endpoint("PostObject", ep.bucket, key, {}, ep.virtual_host)
    tenant = await authz.authorize(cluster, request, ep, requester, b, fields=headers)
    auth = AuthResult(access_key=ak or "", region=cfg.region, service="s3", signed_headers=(),
                      payload_mode="unsigned", signature="", signing_key=b"", amz_date="",
                      scope="", presigned=False, anonymous=ak is None)
    rq = PostRequest(request, ep, auth, tenant, cluster, cfg, rid,
                     requester.tenant if requester else None, b,
                     form_headers=CIMultiDictProxy(headers))
    v = await _store(rq, part, limits)
    path = f"/{quote(key)}" if ep.virtual_host else f"/{quote(ep.bucket)}/{quote(key)}"
    return _answer(fields, f"{request.scheme}://{request.host}{path}", ep.bucket, key, v)


async def _store(rq: PostRequest, part: Any, limits: _Limits) -> ObjectVersion:
    opts = put_options(rq)
    if "content-type" not in rq.headers:
        opts.content_type = "binary/octet-stream"
    opts.acl = await write_acl(rq)
    choice = await sse.for_request(rq)
    opts.sse, opts.sse_c_key = choice.record, choice.customer_key
    given = checksums.from_headers(rq.headers)
    checksums.check_announced(rq.headers.get("x-amz-checksum-algorithm"),
                              "x-amz-checksum-algorithm", given, set(given))
    md5 = content_md5_hex(rq.headers.get("Content-MD5"))  # AWS checks the file against it
    opts.lock = await lock_from_headers(rq)  # the x-amz-object-lock-* fields, as on a PUT
    require_integrity(rq, opts.lock, bool(md5 or given))
    running = [checksums.Checksum(alg) for alg in given or (checksums.DEFAULT_ALGORITHM,)]
    opts.digests = running
    size = 0
    # AWS's 5 GB cap on one POST upload holds whatever the policy's content-length-range says
    cap = rq.cfg.max_object_size
    high = cap if limits.high is None else min(limits.high, cap)

    async def body() -> AsyncIterator[bytes]:
        nonlocal size
        while chunk := await part.read_chunk(CHUNK):
            size += len(chunk)
            if size > high:
                raise S3Error("EntityTooLarge", ProposedSize=str(size),
                              MaxSizeAllowed=str(high))
            yield chunk

    async def finalize(v: ObjectVersion) -> None:
        if size < limits.low:
            raise S3Error("EntityTooSmall", ProposedSize=str(size),
                          MinSizeAllowed=str(limits.low))
        if md5 is not None and md5 != v.etag:
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we "
                          "received.")
        got = {c.algorithm: c.value() for c in running}
        for alg, value in given.items():
            if got.get(alg) != value:
                raise S3Error("BadDigest", f"The {alg} you specified did not match the "
                              "calculated checksum.")
        v.checksums = got
        v.parts[0].checksums = dict(got)

    return await rq.cluster.objects.put(rq.existing_bucket(), rq.key, body(), opts, finalize)


def _answer(fields: dict[str, str], location: str, bucket: str, key: str, v: ObjectVersion,
            ) -> web.StreamResponse:
    """The answer to a stored upload; `location` is the new object's absolute URL, as S3
    gives it (a browser script reads it from the 201 document to link the upload)."""
    etag = f'"{v.etag}"'
    headers = {"ETag": etag, "Location": location}
    if v.version_id != "null":
        headers["x-amz-version-id"] = v.version_id
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect:
        sep = "&" if "?" in redirect else "?"
        headers["Location"] = (f"{redirect}{sep}bucket={quote(bucket, safe='')}"
                               f"&key={quote(key, safe='')}&etag={quote(etag, safe='')}")
        return web.Response(status=303, headers=headers)
    status = fields.get("success_action_status")
    if status == "201":
        root = ET.Element("PostResponse")  # AWS answers it without a namespace
        for name, value in (("Location", location), ("Bucket", bucket), ("Key", key),
                            ("ETag", etag)):
            ET.SubElement(root, name).text = value
        return web.Response(status=201, body=xml_document(root),
                            content_type="application/xml", headers=headers)
    return web.Response(status=200 if status == "200" else 204, headers=headers)
