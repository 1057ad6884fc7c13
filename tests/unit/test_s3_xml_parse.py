"""Tests for gateway.s3.xml_parse: request bodies (delete, complete multipart, create bucket,
versioning, tagging), their limits, and hostile XML refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.s3 import xml_parse
from gateway.s3.errors import S3Error

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
ETAG = "9b2cf535f27731c974343645a3985328"

# --- parsers -------------------------------------------------------------------------------


def _code(body: bytes, parse: Callable[[bytes], object] = xml_parse.parse_delete_objects) -> str:
    with pytest.raises(S3Error) as info:
        parse(body)
    return info.value.code


def test_parse_delete_objects_namespaces() -> None:
    for ns in ("", f" {NS}"):
        body = (
            f"<Delete{ns}><Quiet>true</Quiet>"
            "<Object><Key>a&amp;b</Key></Object>"
            "<Object><Key> spaced </Key><VersionId>v1</VersionId></Object></Delete>"
        ).encode()
        quiet, entries = xml_parse.parse_delete_objects(body)
        assert quiet is True
        assert [(e.key, e.version_id) for e in entries] == [("a&b", None), (" spaced ", "v1")]
    body = b"<Delete><Object><Key>k</Key></Object></Delete>"
    assert xml_parse.parse_delete_objects(body) == (False, [("k", None, None)])
    # An empty VersionId names a (malformed) version; it is not "no version".
    for empty in (b"<VersionId/>", b"<VersionId></VersionId>"):
        body = b"<Delete><Object><Key>k</Key>" + empty + b"</Object></Delete>"
        assert xml_parse.parse_delete_objects(body) == (False, [("k", "", None)])


def test_parse_delete_objects_conditions() -> None:
    """A per-object ETag is the delete's If-Match. LastModifiedTime and Size (directory
    buckets only) and an ETag beside a VersionId refuse the whole request with 501
    NotImplemented, as DeleteObject's headers do: they were applied before."""
    body = b"<Delete><Object><Key>k</Key><ETag>\"abc\"</ETag></Object></Delete>"
    _, [entry] = xml_parse.parse_delete_objects(body)
    assert entry.conditions is not None and entry.conditions.if_match == "abc"
    for extra in (b"<Size>3</Size>", b"<Size>x</Size>",
                  b"<LastModifiedTime>2026-01-02T03:04:05.000Z</LastModifiedTime>",
                  b"<VersionId>v</VersionId><ETag>e</ETag>"):
        doc = b"<Delete><Object><Key>k</Key>" + extra + b"</Object></Delete>"
        assert _code(doc) == "NotImplemented", extra


def test_parse_delete_objects_limits() -> None:
    many = "".join(f"<Object><Key>k{i}</Key></Object>" for i in range(1001))
    assert _code(f"<Delete>{many}</Delete>".encode()) == "MalformedXML"
    assert _code(b"<Delete><Quiet>true</Quiet></Delete>") == "MalformedXML"
    assert _code(b"<Delete><Object><VersionId>v</VersionId></Object></Delete>") == "MalformedXML"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"<Delete>",
        b"not xml",
        b"<Other><Object><Key>k</Key></Object></Other>",
        b'<Delete xmlns="urn:other"><Object><Key>k</Key></Object></Delete>',
        b"<Delete><Object><Key>k</Key></Object></Delete><Extra/>",
    ],
)
def test_malformed_bodies(body: bytes) -> None:
    assert _code(body) == "MalformedXML"


def test_billion_laughs_is_refused() -> None:
    entities = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    body = (
        '<?xml version="1.0"?><!DOCTYPE Delete [<!ENTITY lol0 "lol">'
        + entities
        + "]><Delete><Object><Key>&lol9;</Key></Object></Delete>"
    ).encode()
    assert _code(body) == "MalformedXML"


def test_external_entity_is_refused() -> None:
    body = (
        b'<?xml version="1.0"?><!DOCTYPE Delete [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<Delete><Object><Key>&x;</Key></Object></Delete>"
    )
    assert _code(body) == "MalformedXML"


def test_size_limit() -> None:
    body = b"<Tagging><TagSet></TagSet></Tagging>"
    with pytest.raises(S3Error) as info:
        xml_parse.parse_document(body, "Tagging", limit_bytes=len(body) - 1)
    assert info.value.code == "MalformedXML"
    assert xml_parse.parse_document(body, "Tagging", limit_bytes=len(body)) is not None


def test_parse_complete_multipart() -> None:
    body = (
        f"<CompleteMultipartUpload {NS}>"
        f'<Part><PartNumber>1</PartNumber><ETag>"{ETAG}"</ETag>'
        "<ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>"
        f"<Part><ETag>{ETAG}</ETag><PartNumber> 3 </PartNumber></Part>"
        "</CompleteMultipartUpload>"
    ).encode()
    assert xml_parse.parse_complete_multipart(body) == [
        (1, ETAG, {"CRC32": "AAAAAA=="}),
        (3, ETAG, {}),
    ]


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        ("", "MalformedXML"),
        ("<Part><PartNumber>1</PartNumber></Part>", "MalformedXML"),
        ("<Part><PartNumber>x</PartNumber><ETag>e</ETag></Part>", "MalformedXML"),
        ("<Part><PartNumber>0</PartNumber><ETag>e</ETag></Part>", "InvalidArgument"),
        ("<Part><PartNumber>10001</PartNumber><ETag>e</ETag></Part>", "InvalidArgument"),
        (
            "<Part><PartNumber>2</PartNumber><ETag>e</ETag></Part>"
            "<Part><PartNumber>1</PartNumber><ETag>e</ETag></Part>",
            "InvalidPartOrder",
        ),
        (
            "<Part><PartNumber>2</PartNumber><ETag>e</ETag></Part>"
            "<Part><PartNumber>2</PartNumber><ETag>e</ETag></Part>",
            "InvalidPartOrder",
        ),
    ],
)
def test_parse_complete_multipart_rejects(parts: str, code: str) -> None:
    body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
    assert _code(body, xml_parse.parse_complete_multipart) == code


def test_parse_create_bucket() -> None:
    none = xml_parse.BucketCreation(None, {})
    assert xml_parse.parse_create_bucket(b"") == none
    body = (
        f"<CreateBucketConfiguration {NS}>"
        "<LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"
    ).encode()
    assert xml_parse.parse_create_bucket(body) == ("eu-west-1", {})
    assert xml_parse.parse_create_bucket(b"<CreateBucketConfiguration/>") == none
    assert _code(b"<Bucket/>", xml_parse.parse_create_bucket) == "MalformedXML"


def test_parse_create_bucket_tags_and_directory_buckets() -> None:
    """Tags (in AWS's model since 2025) were ignored with any other unknown element; a
    directory bucket's Location or Bucket made a general-purpose bucket."""
    def doc(inner: str) -> bytes:
        return f"<CreateBucketConfiguration {NS}>{inner}</CreateBucketConfiguration>".encode()

    tags = "<Tags><Tag><Key>a</Key><Value>1</Value></Tag><Tag><Key>b</Key><Value/></Tag></Tags>"
    assert xml_parse.parse_create_bucket(doc(tags)) == (None, {"a": "1", "b": ""})
    assert _code(doc("<Tags><Tag><Key>aws:x</Key><Value>1</Value></Tag></Tags>"),
                 xml_parse.parse_create_bucket) == "InvalidTag"
    for inner in ("<Location><Type>AvailabilityZone</Type><Name>z</Name></Location>",
                  "<Bucket><Type>Directory</Type></Bucket>"):
        assert _code(doc(inner), xml_parse.parse_create_bucket) == "NotImplemented"
    for inner in ("<LocationConstrant>eu-west-1</LocationConstrant>",
                  "<LocationConstraint>a</LocationConstraint>" * 2, tags * 2):
        assert _code(doc(inner), xml_parse.parse_create_bucket) == "MalformedXML"


def test_parse_versioning() -> None:
    body = f"<VersioningConfiguration {NS}><Status>Suspended</Status></VersioningConfiguration>"
    assert xml_parse.parse_versioning(body.encode()) == "Suspended"
    bad = b"<VersioningConfiguration><Status>On</Status></VersioningConfiguration>"
    assert _code(bad, xml_parse.parse_versioning) == "MalformedXML"
    assert _code(b"<VersioningConfiguration/>", xml_parse.parse_versioning) == "MalformedXML"


def _tagging(*pairs: tuple[str, str]) -> bytes:
    tags = "".join(f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in pairs)
    return f"<Tagging><TagSet>{tags}</TagSet></Tagging>".encode()


def test_parse_tagging_limits() -> None:
    eleven = [(f"k{i}", "v") for i in range(11)]
    assert _code(_tagging(*eleven), xml_parse.parse_tagging) == "InvalidTag"
    assert len(xml_parse.parse_tagging(_tagging(*eleven), max_tags=50)) == 11
    assert _code(_tagging(("k" * 129, "v")), xml_parse.parse_tagging) == "InvalidTag"
    assert xml_parse.parse_tagging(_tagging(("k" * 128, "v" * 256))) == {"k" * 128: "v" * 256}
    assert _code(_tagging(("k", "v" * 257)), xml_parse.parse_tagging) == "InvalidTag"
    assert _code(_tagging(("k", "1"), ("k", "2")), xml_parse.parse_tagging) == "InvalidTag"
    assert _code(_tagging(("", "v")), xml_parse.parse_tagging) == "InvalidTag"
    assert _code(_tagging(("aws:x", "v")), xml_parse.parse_tagging) == "InvalidTag"
    assert _code(b"<Tagging/>", xml_parse.parse_tagging) == "MalformedXML"
    assert xml_parse.parse_tagging(_tagging()) == {}


def test_find_helpers_ignore_namespace() -> None:
    root = xml_parse.parse_document(
        f"<CORSConfiguration {NS}><CORSRule><ID>r</ID></CORSRule><CORSRule/>"
        "</CORSConfiguration>".encode(),
        "CORSConfiguration",
    )
    rules = xml_parse.find_all(root, "CORSRule")
    assert len(rules) == 2
    assert xml_parse.find_text(rules[0], "ID") == "r"
    assert xml_parse.find_text(rules[1], "ID") is None
