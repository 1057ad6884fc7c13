"""GetObjectAttributes, and the checksum headers of GET/HEAD (whole object or one part).

GetObjectAttributes answers from the manifest alone (no data is read): ETag, Checksum
(with its type), ObjectParts (multipart objects only: the parts, paged by `x-amz-max-parts`
and `x-amz-part-number-marker`, of a COMPOSITE one; only their count of any other, as S3
answers a FULL_OBJECT one), StorageClass and ObjectSize, whichever `x-amz-object-attributes`
names.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from aiohttp import web

from gateway.s3 import checksums, sse
from gateway.s3.errors import S3Error, xml_document
from gateway.s3.handlers import S3Request, operation, xml_response
from gateway.s3.http import http_date, strict_int
from gateway.s3.xml import CHECKSUM_ALGORITHMS, S3_NAMESPACE
from storage.multipart_checksums import COMPOSITE, stored_type
from storage.records import ObjectVersion

ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
MAX_PARTS = 1000


def is_multipart(v: ObjectVersion) -> bool:
    return "-" in v.etag


def checksum_type(v: ObjectVersion) -> str | None:
    """The version's checksum type (COMPOSITE or FULL_OBJECT), None without a checksum."""
    return stored_type(v.checksums, v.checksum_type)


def checksum_headers(v: ObjectVersion, part_number: int | None = None) -> dict[str, str]:
    """x-amz-checksum-* and x-amz-checksum-type of the object, or of one of its parts.

    A part (GET/HEAD ?partNumber=) of a COMPOSITE object has its own checksum of the
    object's algorithm; one of a FULL_OBJECT object of several parts has none (S3 answers
    none: the type would claim a whole-object checksum), and the only part of a one-part
    FULL_OBJECT object has the object's. A part's checksums of other algorithms (a client's
    CRC32 beside S3's default CRC64NVME) are not the object's and are not shown."""
    values = v.checksums
    if part_number is not None and is_multipart(v):
        part = next((p for p in v.parts if p.number == part_number), None)
        whole_only = checksum_type(v) == "FULL_OBJECT" and len(v.parts) > 1
        values = ({} if part is None or whole_only else
                  {a: c for a, c in part.checksums.items() if a in v.checksums})
    out = {checksums.HEADER[a]: val for a, val in values.items() if a in checksums.HEADER}
    ctype = checksum_type(v)
    if out and ctype:
        out["x-amz-checksum-type"] = ctype
    return out


def _int_header(rq: S3Request, name: str, default: int, low: int, high: int) -> int:
    raw = rq.headers.get(name)
    if raw is None:
        return default
    try:
        n = strict_int(raw)
    except ValueError:
        n = low - 1
    if not low <= n <= high:
        raise S3Error("InvalidArgument", f"Argument {name} must be an integer between {low} "
                      f"and {high}", ArgumentName=name, ArgumentValue=raw)
    return n


def _requested(rq: S3Request) -> list[str]:
    raw = rq.headers.get("x-amz-object-attributes", "")
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names:
        raise S3Error("InvalidArgument", "Empty value in x-amz-object-attributes header",
                      ArgumentName="x-amz-object-attributes", ArgumentValue=raw)
    for n in names:
        if n not in ATTRIBUTES:
            raise S3Error("InvalidArgument", f"Invalid attribute name specified: {n}",
                          ArgumentName="x-amz-object-attributes", ArgumentValue=n)
    return names


def _add(parent: ET.Element, tag: str, text: object) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = str(text).lower() if isinstance(text, bool) else str(text)
    return child


def _add_checksums(parent: ET.Element, values: dict[str, str]) -> None:
    for alg in CHECKSUM_ALGORITHMS:
        if alg in values:
            _add(parent, "Checksum" + alg, values[alg])


def attributes_xml(v: ObjectVersion, names: list[str], max_parts: int, marker: int) -> bytes:
    root = ET.Element("GetObjectAttributesResponse", xmlns=S3_NAMESPACE)
    if "ETag" in names:
        _add(root, "ETag", v.etag)
    if "Checksum" in names and v.checksums:
        elem = ET.SubElement(root, "Checksum")
        _add_checksums(elem, v.checksums)
        _add(elem, "ChecksumType", checksum_type(v))
    if "ObjectParts" in names and is_multipart(v):
        elem = ET.SubElement(root, "ObjectParts")
        _add(elem, "PartsCount", len(v.parts))  # botocore reads PartsCount
        if checksum_type(v) == COMPOSITE:  # S3 lists the parts of a COMPOSITE object only:
            _add_parts(elem, v, max_parts, marker)  # no other's part has its own checksum
    if "StorageClass" in names:
        _add(root, "StorageClass", v.storage_class)
    if "ObjectSize" in names:
        _add(root, "ObjectSize", v.size)
    return xml_document(root)


def _add_parts(elem: ET.Element, v: ObjectVersion, max_parts: int, marker: int) -> None:
    """One page of the object's parts (after part `marker`, at most `max_parts`)."""
    after = [p for p in v.parts if p.number > marker]
    page = after[:max_parts]
    _add(elem, "PartNumberMarker", marker)
    if page:
        _add(elem, "NextPartNumberMarker", page[-1].number)
    _add(elem, "MaxParts", max_parts)
    # a page of none (x-amz-max-parts: 0) is not truncated: it names no part to go on from
    _add(elem, "IsTruncated", 0 < max_parts < len(after))
    for p in page:
        part = ET.SubElement(elem, "Part")
        _add(part, "PartNumber", p.number)
        _add(part, "Size", p.plaintext_size)
        _add_checksums(part, p.checksums)


@operation("GetObjectAttributes")
async def get_object_attributes(rq: S3Request) -> web.StreamResponse:
    from gateway.s3.handlers.objects import version_for_read

    names = _requested(rq)
    max_parts = _int_header(rq, "x-amz-max-parts", MAX_PARTS, 0, MAX_PARTS)
    marker = _int_header(rq, "x-amz-part-number-marker", 0, 0, 2**31 - 1)
    v, versioned = await version_for_read(rq)
    sse.key_for_read(rq.headers, v)  # an SSE-C object needs its key, as for HEAD
    headers = {"Last-Modified": http_date(v.last_modified)}
    if versioned:
        headers["x-amz-version-id"] = v.version_id
    return xml_response(attributes_xml(v, names, max_parts, marker), headers=headers)
