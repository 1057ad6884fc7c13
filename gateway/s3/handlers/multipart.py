"""Multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts,
ListMultipartUploads, and the part ranges GetObject/HeadObject serve for `partNumber`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from gateway.s3 import checksums, sse, xml, xml_multipart, xml_parse
from gateway.s3.body import RequestBody, check_whole_body
from gateway.s3.errors import S3Error
from gateway.s3.handlers import S3Request, operation, xml_response
from gateway.s3.handlers.access import write_acl
from gateway.s3.handlers.attributes import checksum_type
from gateway.s3.handlers.copy import check_copy_size, copy_source
from gateway.s3.handlers.lifecycle_headers import abort_headers, expiration_headers
from gateway.s3.handlers.object_lock import lock_from_headers, require_integrity
from gateway.s3.handlers.objects import put_options, write_conditions, writer
from gateway.s3.http import (
    ascii_digits,
    count_param,
    digits_int,
    iso_time,
    parse_http_date,
    strict_int,
)
from storage import multipart as mp
from storage.datakeys import customer_key_matches
from storage.errors import InvalidInput
from storage.multipart_checksums import COMPOSITE, FULL_OBJECT
from storage.multipart_records import ListedPart, Part, Upload, UploadOptions
from storage.records import ObjectVersion

PART_SIZE_MAX = 5 * 1024**3
COMPLETE_XML_MAX = xml.COMPLETE_XML_LIMIT_BYTES
LIST_MAX = 1000
_PART_NUMBER_MSG = "Part number must be an integer between 1 and 10000, inclusive"


def service(rq: S3Request) -> mp.MultipartService:
    c = rq.cluster
    return c.multipart


@contextlib.contextmanager
def _errors(upload_id: str = "") -> Iterator[None]:
    """Storage multipart errors as AWS sends them."""
    try:
        yield
    except mp.UploadNotFound:
        raise S3Error("NoSuchUpload", UploadId=upload_id) from None
    except mp.InvalidPart as e:
        raise S3Error("InvalidPart", UploadId=upload_id, PartNumber=str(e.number),
                      ETag=e.etag) from None
    except mp.PartTooSmall as e:
        raise S3Error("EntityTooSmall", ProposedSize=str(e.size),
                      MinSizeAllowed=str(mp.MIN_PART_SIZE), PartNumber=str(e.number),
                      ETag=e.etag) from None
    except mp.ChecksumMismatch as e:
        raise S3Error("BadDigest", f"The {e.algorithm} you specified did not match the "
                      "calculated checksum.") from None
    except mp.ChecksumTypeMismatch as e:
        raise S3Error("BadDigest", _type_mismatch(e.have)) from None
    except mp.SizeMismatch as e:
        raise S3Error("InvalidRequest", f"The provided x-amz-mp-object-size ({e.announced}) "
                      f"does not match the object's size ({e.size}).") from None


def _part_number(rq: S3Request) -> int:
    raw = rq.params.get("partNumber", "")
    try:
        n = strict_int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= mp.PART_NUMBER_MAX:
        raise S3Error("InvalidArgument", _PART_NUMBER_MSG, ArgumentName="partNumber",
                      ArgumentValue=raw)
    return n


def _checksum_headers(values: dict[str, str], ctype: str | None = None) -> dict[str, str]:
    out = {checksums.HEADER[a]: v for a, v in values.items() if a in checksums.HEADER}
    if ctype and values:
        out["x-amz-checksum-type"] = ctype
    return out


# --- create --------------------------------------------------------------------------------


@operation("CreateMultipartUpload")
async def create_multipart_upload(rq: S3Request) -> web.StreamResponse:
    po = put_options(rq)
    choice = await sse.for_request(rq)
    po.sse = choice.record
    alg = rq.headers.get("x-amz-checksum-algorithm")
    ctype = rq.headers.get("x-amz-checksum-type")
    if alg is not None and alg.upper() in checksums.UNCHECKED:  # as PutObject answers it
        checksums.refuse_unchecked(f"x-amz-checksum-{alg.lower()}")
    if alg is not None and alg.upper() not in checksums.ALGORITHMS:
        raise S3Error("InvalidRequest", "Checksum algorithm provided is unsupported. Please "
                      "try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, "
                      "SHA256]")
    opts = UploadOptions(content_type=po.content_type, user_meta=po.user_meta,
                         headers=po.headers, storage_class=po.storage_class, tags=po.tags,
                         sse=po.sse, checksum_algorithm=alg.upper() if alg else None,
                         checksum_type=ctype.upper() if ctype else None,
                         sse_c_key=choice.customer_key, acl=await write_acl(rq),
                         lock=await lock_from_headers(rq))
    try:
        up = await service(rq).create(rq.existing_bucket(), rq.key, opts)
    except InvalidInput as e:
        raise S3Error("InvalidRequest", str(e)) from None
    headers = dict(sse.response_headers(up.sse, context=True))
    if up.checksum_algorithm:
        headers["x-amz-checksum-algorithm"] = up.checksum_algorithm
        headers["x-amz-checksum-type"] = up.checksum_type or COMPOSITE
    headers.update(await abort_headers(rq, rq.key, up.initiated))
    return xml_response(xml_multipart.initiate_multipart_xml(rq.bucket, rq.key, up.upload_id),
                        headers=headers)


# --- parts ---------------------------------------------------------------------------------


def _part_response(part: Part, up: Upload) -> dict[str, str]:
    headers = {"ETag": f'"{part.etag}"', **sse.response_headers(up.sse)}
    headers.update(_checksum_headers(part.checksums))
    return headers


_SSEC_MISSING = ("The multipart upload initiate requested encryption. Subsequent part "
                 "requests must include the appropriate encryption parameters.")
_SSEC_MISMATCH = "The provided encryption parameters did not match the ones used originally."


def _part_customer_key(rq: S3Request, up: Upload | ObjectVersion) -> bytes | None:
    """The SSE-C key a part or completion request must repeat when the upload (or the object
    a completed upload made) was created with one: missing or different is 400
    InvalidRequest, as AWS answers."""
    ckey = sse.customer_key(rq.headers)
    if not sse.is_customer(up):  # type: ignore[arg-type]
        if ckey is not None:
            raise S3Error("InvalidRequest", "The encryption parameters are not applicable to "
                          "this object.")
        return None
    if ckey is None:
        raise S3Error("InvalidRequest", _SSEC_MISSING)
    if not customer_key_matches(up, ckey):  # type: ignore[arg-type]
        raise S3Error("InvalidRequest", _SSEC_MISMATCH)
    return ckey


def _completion_customer_key(rq: S3Request, made: Upload | ObjectVersion,
                             with_checksum: bool) -> None:
    """AWS asks a completion of an SSE-C upload for the key only when the upload was made
    with a checksum algorithm (clients before s3transfer 0.7.0, such as Debian's aws CLI
    2.9, never send it); a key that is sent must still be the upload's."""
    if (sse.is_customer(made) and not with_checksum  # type: ignore[arg-type]
            and sse.customer_key(rq.headers) is None):
        return
    _part_customer_key(rq, made)


async def _part_target(rq: S3Request) -> tuple[int, str, mp.MultipartService, Upload,
                                               bytes | None]:
    """What every part request names: part number, upload (checked), and its SSE-C key (a
    part of an SSE-C upload is refused once the bucket blocks SSE-C). A part of an SSE-KMS
    upload is sealed with the upload's KMS key: only that key's tenant may send one (AWS
    asks kms:Decrypt and kms:GenerateDataKey of UploadPart and UploadPartCopy, which no key
    policy here grants across tenants: `sse.refuse_foreign_kms`), else 403 AccessDenied
    rather than an object its writer cannot read."""
    number = _part_number(rq)
    upload_id = rq.upload_id
    svc = service(rq)
    with _errors(upload_id):
        up, _ = await svc.get(rq.existing_bucket(), rq.key, upload_id)
    sse.refuse_foreign_kms(rq.requester, up)
    ckey = _part_customer_key(rq, up)
    sse.refuse_blocked(rq.existing_bucket().config.get("encryption"), ckey)
    return number, upload_id, svc, up, ckey


@operation("UploadPart")
async def upload_part(rq: S3Request) -> web.StreamResponse:
    number, upload_id, svc, up, part_key = await _part_target(rq)
    body = RequestBody(rq.request, rq.auth, PART_SIZE_MAX)
    # a part of an object with Object Lock parameters (the upload's, or the bucket's default
    # retention) needs a digest, as a PutObject of one does (AWS: UploadPart's Content-MD5)
    require_integrity(rq, up.lock, body.integrity_declared, "Put Part")
    want = up.checksum_algorithm
    if want:
        sent = [a for a in body.checksums if a != want]
        if sent or (not body.checksums and _is_composite(up)):
            # a COMPOSITE object's checksum is made of the parts' checksums the client sent:
            # S3 refuses a part without one ("null"); a FULL_OBJECT part's it computes
            raise S3Error("InvalidRequest", "Checksum Type mismatch occurred, expected "
                          f"checksum Type: {want.lower()}, actual checksum Type: "
                          f"{sent[0].lower() if sent else 'null'}")
        body.checksums.setdefault(want, checksums.Checksum(want))
    else:  # S3's default: each part's CRC64NVME, combined into the object's at Complete
        body.checksums.setdefault(checksums.DEFAULT_ALGORITHM,
                                  checksums.Checksum(checksums.DEFAULT_ALGORITHM))

    async def finalize(part: Part) -> None:
        part.checksums = body.verify(part.etag)

    with _errors(upload_id):
        async with contextlib.aclosing(aiter(body)) as data:  # a body given up on ends now
            part = await svc.upload_part(rq.existing_bucket(), rq.key, upload_id, number,
                                         data, body.digests, body.length, finalize,
                                         sse_c_key=part_key)
    return web.Response(status=200, headers=_part_response(part, up))


def _copy_range(value: str | None, size: int) -> tuple[int, int]:
    """`x-amz-copy-source-range: bytes=a-b` -> [a, b+1); absent means the whole source."""
    if value is None:
        return 0, size
    spec = value[6:] if value.startswith("bytes=") else ""
    first, sep, last = spec.partition("-")
    if not (sep and ascii_digits(first) and ascii_digits(last)):
        raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the "
                      "form bytes=first-last where first and last are the zero-based offsets "
                      "of the first and last bytes to copy",
                      ArgumentName="x-amz-copy-source-range", ArgumentValue=value)
    a, b = digits_int(first), digits_int(last)
    if a > b or b >= size:
        raise S3Error("InvalidRange", "The requested range is not valid for the request. "
                      "Try another range.", RangeRequested=value, ActualObjectSize=str(size))
    return a, b + 1


@operation("UploadPartCopy")
async def upload_part_copy(rq: S3Request) -> web.StreamResponse:
    number, upload_id, svc, up, part_key = await _part_target(rq)
    src, src_versioned, _ = await copy_source(rq)
    src_key = sse.key_for_read(rq.headers, src, sse.COPY_PREFIX)
    sse.refuse_foreign_kms(rq.requester, src)
    start, end = _copy_range(rq.headers.get("x-amz-copy-source-range"), src.size)
    check_copy_size(end - start)
    running = checksums.Checksum(up.checksum_algorithm or checksums.DEFAULT_ALGORITHM)

    async def finalize(part: Part) -> None:
        part.checksums = {running.algorithm: running.value()}

    with _errors(upload_id):
        part = await svc.upload_part(rq.existing_bucket(), rq.key, upload_id, number,
                                     rq.cluster.objects.read(src, start, end, sse_c_key=src_key),
                                     [running], end - start, finalize,
                                     sse_c_key=part_key)
    headers = dict(sse.response_headers(up.sse))
    if src_versioned:
        headers["x-amz-copy-source-version-id"] = src.version_id
    # AWS documents CopyPartResult's checksum only for the algorithm the upload was created
    # with: S3's default one (kept for the completion) is not answered here
    shown = part.checksums if up.checksum_algorithm else None
    return xml_response(xml.copy_part_result_xml(part.etag, iso_time(part.modified),
                                                 shown or None), headers=headers)


# --- complete / abort ----------------------------------------------------------------------


async def _read_body(rq: S3Request, limit: int) -> bytes:
    """The whole body, MalformedXML past `limit`. (One `read` returns only what is buffered,
    at most ~128 KiB: a 10,000-part completion's ~900 KB list came in cut short.)"""
    if rq.request.content_length is not None and rq.request.content_length > limit:
        raise S3Error("MalformedXML")
    body = bytearray()
    while chunk := await rq.request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise S3Error("MalformedXML")
    check_whole_body(rq.request, rq.auth, bytes(body))
    return bytes(body)


@operation("CompleteMultipartUpload")
async def complete_multipart_upload(rq: S3Request) -> web.StreamResponse:
    upload_id = rq.upload_id
    svc = service(rq)
    with _errors(upload_id):
        try:
            up, _ = await svc.get(rq.existing_bucket(), rq.key, upload_id)
        except mp.UploadNotFound:
            try:
                asked = await _asked(rq)
            except S3Error:  # no such upload: that is the answer, whatever the body
                raise mp.UploadNotFound(upload_id) from None
            keyless = sse.customer_key(rq.headers) is None
            # without a key, whether asserted checksums match is told only of a non-SSE-C
            # object (else the answer would confirm a guess of its plaintext's checksum)
            v = await _made(rq, upload_id, _unasserted(asked) if keyless else asked)
            # a repeat asks for the SSE-C key exactly as the first completion did: S3's
            # default checksum (an upload made without an algorithm) has no type recorded
            _completion_customer_key(rq, v, with_checksum=v.checksum_type is not None)
            sse.refuse_foreign_kms(rq.requester, v)
            _refuse_keyless_assertion(rq, v, asked)
            if keyless and _asserts(asked):
                v = await _made(rq, upload_id, asked)
            return await _completed(rq, v)
    _completion_customer_key(rq, up, with_checksum=up.checksum_algorithm is not None)
    sse.refuse_foreign_kms(rq.requester, up)  # the parts are decrypted to be assembled (AWS)
    _check_checksum_type(_asserted_type(rq), up)
    asked = await _asked(rq)
    _refuse_keyless_assertion(rq, up, asked)
    _require_part_checksums(up, asked)
    with _errors(upload_id):
        try:
            v = await svc.complete(rq.existing_bucket(), rq.key, upload_id, asked.listed,
                                   write_conditions(rq.headers), expected=asked.expected,
                                   expected_size=asked.size, expected_type=asked.ctype,
                                   writer=writer(rq))
        except mp.UploadNotFound:  # completed meanwhile (a race, here or on another gateway)
            v = await _made(rq, upload_id, asked)
    return await _completed(rq, v)


def _asserted_type(rq: S3Request) -> str | None:
    """The checksum type a completion asserts (x-amz-checksum-type), None if it asserts none."""
    raw = rq.headers.get("x-amz-checksum-type")
    if raw is None:
        return None
    if raw.upper() not in (COMPOSITE, FULL_OBJECT):
        raise S3Error("InvalidRequest", "Value for x-amz-checksum-type header is invalid.")
    return raw.upper()


def _check_checksum_type(asserted: str | None, up: Upload) -> None:
    """A completion's x-amz-checksum-type must be the upload's (AWS: BadDigest otherwise);
    an upload made without a checksum algorithm has S3's default, a FULL_OBJECT CRC64NVME
    (unless a part predates it: storage refuses that when the parts are read)."""
    if asserted is None:
        return
    have = up.checksum_type if up.checksum_algorithm else FULL_OBJECT
    if asserted != have:
        raise S3Error("BadDigest", _type_mismatch(have))


def _require_part_checksums(up: Upload, asked: _Asked) -> None:
    """A COMPOSITE upload (made with a checksum algorithm) is completed only with each
    listed part's checksum of that algorithm, as S3 answers (400 InvalidRequest): the
    object's checksum is the digest of exactly those part checksums."""
    alg = up.checksum_algorithm
    if not alg or not _is_composite(up):
        return
    for p in asked.listed:
        if alg not in p.checksums:
            raise S3Error("InvalidRequest", f"The upload was created using a {alg.lower()} "
                          "checksum. The complete request must include the checksum for "
                          f"each part. It was missing for part {p.number} in the request.")


def _is_composite(up: Upload) -> bool:
    """Whether an upload made with a checksum algorithm has a COMPOSITE checksum (its
    default type for every algorithm but CRC64NVME, recorded at creation)."""
    return (up.checksum_type or COMPOSITE) == COMPOSITE


def _type_mismatch(have: str | None) -> str:
    """AWS's message for a completion whose checksum type is not the upload's."""
    return (f"The upload was created using the {have or 'no'} checksum mode. The complete "
            "request must use the same checksum mode.")


@dataclass
class _Asked:
    """What a CompleteMultipartUpload asks for: its parts, whole-object checksums, size,
    checksum type."""

    listed: list[ListedPart]
    expected: dict[str, str]
    size: int | None
    ctype: str | None = None


async def _asked(rq: S3Request) -> _Asked:
    raw = await _read_body(rq, COMPLETE_XML_MAX)
    try:
        parsed = xml_parse.parse_complete_multipart(raw)
    except S3Error as e:
        if e.code == "MalformedXML" and b"<Part" not in raw:
            raise S3Error("MalformedXML", "The XML you provided was not well-formed or did "
                          "not validate against our published schema") from None
        raise
    listed = [ListedPart(n, etag, cks) for n, etag, cks in parsed]
    return _Asked(listed, checksums.from_headers(rq.headers, parts=len(listed)),
                  _announced_size(rq.headers.get("x-amz-mp-object-size")), _asserted_type(rq))


async def _made(rq: S3Request, upload_id: str, asked: _Asked) -> ObjectVersion:
    """The current version if upload `upload_id` made it exactly as `asked`: a repeated
    completion is answered 200 with it; else UploadNotFound (NoSuchUpload, S3's answer
    for a completed upload), never 200 with an object the request did not describe."""
    done = await service(rq).finished(rq.existing_bucket(), rq.key, upload_id, asked.listed,
                                      asked.expected, asked.size, asked.ctype)
    if done is None:
        raise mp.UploadNotFound(upload_id)
    return done


def _announced_size(raw: str | None) -> int | None:
    """x-amz-mp-object-size: the object's size as the client expects it (S3 refuses a
    completion whose parts add up to another size, 400 InvalidRequest)."""
    if raw is None:
        return None
    raw = raw.strip()
    if not ascii_digits(raw):
        raise S3Error("InvalidRequest", "Value for x-amz-mp-object-size header is invalid.")
    return digits_int(raw)


def _asserts(asked: _Asked) -> bool:
    """Whether a completion asserts a checksum: of the object, or of a listed part."""
    return bool(asked.expected) or any(p.checksums for p in asked.listed)


def _unasserted(asked: _Asked) -> _Asked:
    """The completion without its checksum assertions (its type kept: it tells no more
    than a listing's ChecksumAlgorithm does)."""
    return _Asked([ListedPart(p.number, p.etag, {}) for p in asked.listed], {}, asked.size,
                  asked.ctype)


def _refuse_keyless_assertion(rq: S3Request, made: Upload | ObjectVersion,
                              asked: _Asked) -> None:
    """An SSE-C upload's checksums are digests of its plaintext: a completion without the
    key may not assert one (BadDigest or success would confirm a guess), as AWS asks for
    the key wherever there is a checksum."""
    if (sse.is_customer(made) and sse.customer_key(rq.headers) is None  # type: ignore[arg-type]
            and _asserts(asked)):
        raise S3Error("InvalidRequest", _SSEC_MISSING)


def _keyless_sse_c(rq: S3Request, made: Upload | ObjectVersion) -> bool:
    """An SSE-C upload (or its object) asked about without the key: its checksums are
    digests of the plaintext, not shown then."""
    return sse.is_customer(made) and sse.customer_key(rq.headers) is None  # type: ignore[arg-type]


async def _completed(rq: S3Request, v: ObjectVersion) -> web.Response:
    headers = dict(sse.response_headers(v.sse))
    if v.version_id != "null":
        headers["x-amz-version-id"] = v.version_id
    headers.update(await expiration_headers(rq, v))
    location = f"{rq.request.scheme}://{rq.request.host}/{quote(rq.bucket)}/{quote(rq.key)}"
    shown = None if _keyless_sse_c(rq, v) else v.checksums or None
    return xml_response(xml_multipart.complete_multipart_xml(location, rq.bucket, rq.key, v.etag,
                                                   shown, checksum_type(v) if shown else None),
                        headers=headers)


INITIATED_HEADER = "x-amz-if-match-initiated-time"


@operation("AbortMultipartUpload")
async def abort_multipart_upload(rq: S3Request) -> web.StreamResponse:
    """With x-amz-if-match-initiated-time, only the upload begun at that second is aborted
    (412 otherwise) and a missing upload is 204, as S3 documents it; an upload's start never
    changes, so a check before the abort holds for it."""
    upload_id = rq.upload_id
    raw = rq.headers.get(INITIATED_HEADER)
    when = parse_http_date(raw) if raw is not None else None
    if raw is not None and when is None:
        raise S3Error("InvalidArgument", f"Invalid {INITIATED_HEADER}.",
                      ArgumentName=INITIATED_HEADER, ArgumentValue=raw)
    with _errors(upload_id):
        try:
            if when is not None:
                up, _ = await service(rq).get(rq.existing_bucket(), rq.key, upload_id)
                if int(up.initiated) != int(when):
                    raise S3Error("PreconditionFailed", Condition=INITIATED_HEADER)
            await service(rq).abort(rq.existing_bucket(), rq.key, upload_id)
        except mp.UploadNotFound:
            if when is None:
                raise
    return web.Response(status=204)


# --- listing -------------------------------------------------------------------------------


@operation("ListParts")
async def list_parts(rq: S3Request) -> web.StreamResponse:
    upload_id = rq.upload_id
    max_parts = count_param(rq.params, "max-parts", LIST_MAX, LIST_MAX)
    marker = count_param(rq.params, "part-number-marker", 0, mp.PART_NUMBER_MAX)
    with _errors(upload_id):
        up, parts, truncated = await service(rq).list_parts(rq.existing_bucket(), rq.key,
                                                            upload_id, marker, max_parts)
    if sse.is_customer(up) and sse.customer_key(rq.headers) is not None:  # type: ignore[arg-type]
        _part_customer_key(rq, up)  # a key that is sent must be the upload's
    hide = _keyless_sse_c(rq, up)
    entries = [xml_multipart.PartEntry(p.number, iso_time(p.modified), p.etag, p.size,
                             None if hide else p.checksums or None) for p in parts]
    owner = await rq.cluster.tenants.identity(str(up.acl.get("owner") or up.tenant))
    return xml_response(xml_multipart.list_parts_xml(
        rq.bucket, rq.key, upload_id, entries, part_number_marker=marker,
        next_part_number_marker=parts[-1].number if parts else None,
        max_parts=max_parts, is_truncated=truncated, owner=owner, initiator=owner,
        storage_class=up.storage_class, checksum_algorithm=up.checksum_algorithm,
        checksum_type=up.checksum_type), headers=await abort_headers(rq, rq.key, up.initiated))


@operation("ListMultipartUploads")
async def list_multipart_uploads(rq: S3Request) -> web.StreamResponse:
    p = rq.params
    max_uploads = count_param(rq.params, "max-uploads", LIST_MAX, LIST_MAX)
    enc = p.get("encoding-type")
    if enc is not None and enc != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                      ArgumentName="encoding-type", ArgumentValue=enc)
    key_marker = p.get("key-marker", "")
    upload_id_marker = p.get("upload-id-marker", "") if key_marker else ""
    uploads, prefixes, truncated = await service(rq).list_uploads(
        rq.existing_bucket(), p.get("prefix", ""), p.get("delimiter", ""), key_marker,
        upload_id_marker, max_uploads)
    owners = {t: await rq.cluster.tenants.identity(t)
              for t in {str(u.acl.get("owner") or u.tenant) for u in uploads}}
    entries = [xml_multipart.UploadEntry(u.key, u.upload_id, iso_time(u.initiated), u.storage_class,
                               owners[str(u.acl.get("owner") or u.tenant)],
                               owners[str(u.acl.get("owner") or u.tenant)],
                               u.checksum_algorithm, u.checksum_type)
               for u in uploads]
    next_key = next_id = None
    if truncated:
        last_upload = uploads[-1] if uploads else None
        last_prefix = prefixes[-1] if prefixes else None
        if last_upload is not None and (last_prefix is None or last_upload.key > last_prefix):
            next_key, next_id = last_upload.key, last_upload.upload_id
        else:
            next_key, next_id = last_prefix, ""
    return xml_response(xml_multipart.list_multipart_uploads_xml(
        rq.bucket, entries, key_marker=key_marker, upload_id_marker=upload_id_marker,
        next_key_marker=next_key, next_upload_id_marker=next_id, prefix=p.get("prefix", ""),
        delimiter=p.get("delimiter") or None, max_uploads=max_uploads, is_truncated=truncated,
        common_prefixes=prefixes, encoding_type=enc))


# --- GetObject / HeadObject ?partNumber= ---------------------------------------------------


def _no_such_part(n: int, count: int) -> S3Error:
    """GET/HEAD ?partNumber= past the object's parts (`count`; 1 for a simple object): 416
    InvalidPartNumber naming PartNumberRequested and ActualPartCount, as S3 answers
    (LocalStack's S3 model, MinIO, Swift's s3api; ceph/s3-tests expects RGW's 400)."""
    return S3Error("InvalidPartNumber", PartNumberRequested=str(n), ActualPartCount=str(count))


def part_range(v: ObjectVersion, raw: str, range_header: str | None,
               ) -> tuple[int, int, int | None]:
    """[start, end) of part `raw` of `v` and the parts count (None for a simple object)."""
    try:
        n = strict_int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= mp.PART_NUMBER_MAX:
        raise S3Error("InvalidArgument", _PART_NUMBER_MSG, ArgumentName="partNumber",
                      ArgumentValue=raw)
    if range_header:
        raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber "
                      "query parameter.")
    multipart = "-" in v.etag
    if not multipart:
        if n != 1:
            raise _no_such_part(n, 1)
        return 0, v.size, None
    if n > len(v.parts):
        raise _no_such_part(n, len(v.parts))
    start = sum(p.plaintext_size for p in v.parts[: n - 1])
    return start, start + v.parts[n - 1].plaintext_size, len(v.parts)
