"""Validating parsers of S3 request bodies.

Parsers never expand entities or DTDs (`defusedxml`, DTDs forbidden), cap the body size, accept
the S3 namespace present or absent, and turn anything they cannot accept into
`S3Error('MalformedXML')` (or the code AWS uses for that case, such as `InvalidTag`).
`parse_document`, `find_text` and `find_all` are the building blocks of the configuration
parsers (CORS and encryption in `gateway.s3.config_xml`, lifecycle in
`gateway.s3.config_lifecycle`).
"""

from __future__ import annotations

from typing import NamedTuple
from xml.etree import ElementTree as ET

import defusedxml

from gateway.s3 import xml_bounded
from gateway.s3.checksums import UNCHECKED
from gateway.s3.errors import S3Error
from gateway.s3.http import ascii_digits, digits_int
from gateway.s3.xml import (
    CHECKSUM_ALGORITHMS,
    COMPLETE_XML_LIMIT_BYTES,
    CONFIG_XML_LIMIT_BYTES,
    DELETE_OBJECTS_MAX,
    DELETE_XML_LIMIT_BYTES,
    OBJECT_TAGS_MAX,
    PART_NUMBER_MAX,
    S3_NAMESPACE,
    TAG_KEY_CHARS_MAX,
    TAG_VALUE_CHARS_MAX,
)
from storage.conditions import DeleteConditions, etag_value

# CompletedPart digests of algorithms no part is stored with (gateway.s3.checksums)
UNCHECKED_PART_CHECKSUMS = tuple(f"Checksum{a}" for a in UNCHECKED)


def local_name(tag: str) -> str:
    """`{namespace}Name` -> `Name`."""
    return tag.rsplit("}", 1)[-1]


def malformed(detail: str | None = None) -> S3Error:
    """MalformedXML, with the detail kept as a note for the log (never sent)."""
    err = S3Error("MalformedXML")
    if detail:
        err.add_note(detail)
    return err


def invalid_argument(message: str, name: str = "", value: str = "") -> S3Error:
    """InvalidArgument naming the argument and the value refused."""
    return S3Error("InvalidArgument", message, ArgumentName=name, ArgumentValue=value)


XML_SPACE = " \t\r\n"  # XML's whitespace (S, production 3): nothing else is blank


def parse_int(text: str | None, what: str, bits: int = 64) -> int | None:
    """An element's integer text (None when absent): an optional sign and ASCII digits,
    XML whitespace (space, tab, CR, LF: what xs:int's whiteSpace=collapse removes) around
    them, within a signed `bits`-bit integer (the schema's int or long); MalformedXML
    otherwise. int() alone also took other Unicode digits and '_', and a value past 64 bits
    was a 500 when stored; str.strip() also took a no-break or other Unicode space."""
    if text is None:
        return None
    raw = text.strip(XML_SPACE)
    if not ascii_digits(raw[1:] if raw[:1] in "+-" else raw):
        raise malformed(f"{what} {text!r} is not an integer")
    value = -digits_int(raw[1:]) if raw[:1] == "-" else digits_int(raw.removeprefix("+"))
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise malformed(f"{what} {text!r} is out of range")
    return value


def parse_document(
    body: bytes, root_tag: str, limit_bytes: int = CONFIG_XML_LIMIT_BYTES
) -> ET.Element:
    """Parse a request body whose root must be `root_tag` (S3 namespace optional).

    DTDs, entities and external references are refused; bodies over `limit_bytes` or over
    what any S3 document holds (`gateway.s3.xml_bounded`), empty bodies, malformed XML and a
    wrong root all raise `S3Error('MalformedXML')`.
    """
    if len(body) > limit_bytes:
        raise malformed(f"body of {len(body)} bytes exceeds {limit_bytes}")
    if not body.strip():
        raise malformed("empty body")
    try:
        root = xml_bounded.parse(body)  # OverBudget is a ValueError
    except (ET.ParseError, defusedxml.DefusedXmlException, ValueError) as exc:
        raise malformed(str(exc)) from None
    namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    if local_name(root.tag) != root_tag or namespace not in ("", S3_NAMESPACE):
        raise malformed(f"root element {root.tag!r}, expected {root_tag!r}")
    return root


def find_all(elem: ET.Element, name: str) -> list[ET.Element]:
    """Direct children of `elem` named `name`, in any namespace."""
    return [child for child in elem if local_name(child.tag) == name]


def only_children(elem: ET.Element, once: tuple[str, ...], many: tuple[str, ...] = ()) -> None:
    """MalformedXML unless every child element of `elem` is named in `once` (at most one of
    each) or `many`, as the published schema allows: an unknown or repeated element is
    refused, never silently ignored (a misspelt action would otherwise never run)."""
    names = [local_name(c.tag) for c in elem if isinstance(c.tag, str)]
    for name in names:
        if name not in once and name not in many:
            raise malformed(f"unexpected element {name!r} in {local_name(elem.tag)}")
        if name in once and names.count(name) > 1:
            raise malformed(f"{name} given more than once in {local_name(elem.tag)}")


def find_text(elem: ET.Element, name: str) -> str | None:
    """Text of the first direct child named `name` ('' if empty), or None if absent."""
    for child in elem:
        if local_name(child.tag) == name:
            return child.text or ""
    return None


class BucketCreation(NamedTuple):
    """What a CreateBucketConfiguration asks for: the region (None: the endpoint's) and the
    bucket's first tags (empty: none)."""

    region: str | None = None
    tags: dict[str, str] = {}


BUCKET_TAGS_MAX = 50


def parse_create_bucket(body: bytes) -> BucketCreation:
    """CreateBucketConfiguration -> BucketCreation. An unknown or repeated element is
    MalformedXML; `Location` and `Bucket` describe a directory bucket (S3 Express), which is
    not offered: 501 NotImplemented, never a general-purpose bucket made in their place."""
    if not body.strip():
        return BucketCreation()
    root = parse_document(body, "CreateBucketConfiguration")
    only_children(root, ("LocationConstraint", "Location", "Bucket", "Tags"))
    if find_all(root, "Location") or find_all(root, "Bucket"):
        raise S3Error("NotImplemented", "Directory buckets are not supported.")
    tags = find_all(root, "Tags")
    return BucketCreation(find_text(root, "LocationConstraint") or None,
                          _tag_set(tags[0], BUCKET_TAGS_MAX) if tags else {})


def parse_versioning(body: bytes) -> str:
    """VersioningConfiguration -> 'Enabled' or 'Suspended'. MfaDelete Enabled is refused
    (501 NotImplemented): there is no MFA here to demand, and accepting it would ignore it."""
    root = parse_document(body, "VersioningConfiguration")
    only_children(root, ("Status", "MfaDelete"))
    status = find_text(root, "Status")
    if status not in ("Enabled", "Suspended"):
        raise malformed(f"versioning status {status!r}")
    mfa = find_text(root, "MfaDelete")
    if mfa not in (None, "Enabled", "Disabled"):
        raise malformed(f"MfaDelete {mfa!r}")
    if mfa == "Enabled":
        raise S3Error("NotImplemented", "MFA Delete is not supported.")
    return status


def parse_tagging(body: bytes, max_tags: int = OBJECT_TAGS_MAX) -> dict[str, str]:
    """Tagging -> {key: value}; `max_tags` is 10 for objects, 50 for buckets."""
    root = parse_document(body, "Tagging")
    only_children(root, ("TagSet",))
    tag_sets = find_all(root, "TagSet")
    if len(tag_sets) != 1:
        raise malformed("expected one TagSet")
    return _tag_set(tag_sets[0], max_tags)


def _tag_set(elem: ET.Element, max_tags: int) -> dict[str, str]:
    """The `Tag` children of a TagSet (or of CreateBucketConfiguration's Tags) -> {key:
    value}, each checked as S3 checks a tag."""
    only_children(elem, (), ("Tag",))
    tags: dict[str, str] = {}
    for tag in find_all(elem, "Tag"):
        only_children(tag, ("Key", "Value"))
        key, value = find_text(tag, "Key"), find_text(tag, "Value")
        if key is None or value is None:
            raise malformed("Tag needs Key and Value")
        if not key or len(key) > TAG_KEY_CHARS_MAX:
            raise S3Error("InvalidTag", "The TagKey you have provided is invalid")
        if len(value) > TAG_VALUE_CHARS_MAX:
            raise S3Error("InvalidTag", "The TagValue you have provided is invalid")
        if key.startswith("aws:"):
            raise S3Error("InvalidTag", "System tags cannot be added/updated by requester")
        if key in tags:
            raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
        tags[key] = value
    if len(tags) > max_tags:
        raise S3Error("InvalidTag", f"Tag count cannot be greater than {max_tags}")
    return tags


class DeleteEntry(NamedTuple):
    """One object of a DeleteObjects request, with its conditions (ETag, time, size)."""

    key: str
    version_id: str | None
    conditions: DeleteConditions | None = None


def _delete_conditions(obj: ET.Element, version_id: str | None) -> DeleteConditions | None:
    """An entry's ETag condition. `LastModifiedTime` and `Size` are directory-bucket
    conditions, and an ETag on a delete by version id is not evaluated by AWS either
    (DeleteObject answers both 501 NotImplemented on a general-purpose bucket: see
    `handlers.objects.delete_conditions`): the whole request is refused, nothing deleted,
    rather than a condition accepted and ignored. (AWS's exact batch answer is not
    measured; the refusal mirrors DeleteObject's.)"""
    for name in ("LastModifiedTime", "Size"):
        if find_text(obj, name) is not None:
            raise S3Error("NotImplemented", f"The Object element {name} is supported only "
                          "for directory buckets.")
    etag = find_text(obj, "ETag")
    if etag is None:
        return None
    if version_id is not None:
        raise S3Error("NotImplemented", "The Object element ETag cannot be combined with "
                      "VersionId.")
    return DeleteConditions(if_match=etag_value(etag))


def parse_delete_objects(
    body: bytes, limit_bytes: int = DELETE_XML_LIMIT_BYTES
) -> tuple[bool, list[DeleteEntry]]:
    """Delete -> (quiet, [DeleteEntry]); 1 to 1000 objects."""
    root = parse_document(body, "Delete", limit_bytes)
    only_children(root, ("Quiet",), ("Object",))
    quiet = (find_text(root, "Quiet") or "false").strip().lower() == "true"
    objects: list[DeleteEntry] = []
    for obj in find_all(root, "Object"):
        only_children(obj, ("Key", "VersionId", "ETag", "LastModifiedTime", "Size"))
        key = find_text(obj, "Key")
        if key is None:
            raise malformed("Object without Key")
        # An empty <VersionId/> names a (malformed) version: it is not "no version".
        version_id = find_text(obj, "VersionId")
        objects.append(DeleteEntry(key, version_id, _delete_conditions(obj, version_id)))
    if not objects or len(objects) > DELETE_OBJECTS_MAX:
        raise malformed(f"{len(objects)} objects; 1 to {DELETE_OBJECTS_MAX} allowed")
    return quiet, objects


def parse_complete_multipart(
    body: bytes, limit_bytes: int = COMPLETE_XML_LIMIT_BYTES
) -> list[tuple[int, str, dict[str, str]]]:
    """CompleteMultipartUpload -> [(part_number, etag without quotes, {algorithm: checksum})].

    Parts must be strictly ascending (`InvalidPartOrder`); numbers are 1 to 10000.
    """
    root = parse_document(body, "CompleteMultipartUpload", limit_bytes)
    only_children(root, (), ("Part",))
    parts: list[tuple[int, str, dict[str, str]]] = []
    for part in find_all(root, "Part"):
        for name in UNCHECKED_PART_CHECKSUMS:
            if find_all(part, name):  # a digest no part can carry here (checksums.UNCHECKED)
                raise S3Error("NotImplemented", f"{name} is not supported.")
        only_children(part, ("PartNumber", "ETag",
                             *(f"Checksum{a}" for a in CHECKSUM_ALGORITHMS)))
        number_text, etag = find_text(part, "PartNumber"), find_text(part, "ETag")
        if number_text is None or etag is None:
            raise malformed("Part needs PartNumber and ETag")
        number = parse_int(number_text, "PartNumber")
        assert number is not None
        if not 1 <= number <= PART_NUMBER_MAX:
            raise S3Error(
                "InvalidArgument",
                f"Part number must be an integer between 1 and {PART_NUMBER_MAX}, inclusive",
                ArgumentName="partNumber",
                ArgumentValue=str(number),
            )
        if parts and number <= parts[-1][0]:
            raise S3Error("InvalidPartOrder")
        checksums = {
            algorithm: value
            for algorithm in CHECKSUM_ALGORITHMS
            if (value := find_text(part, "Checksum" + algorithm))
        }
        parts.append((number, etag.strip().strip('"'), checksums))
    if not parts:
        raise malformed("no parts")
    return parts
