"""S3 XML builders: golden bytes, read back by botocore's parser (the request parsers are in
test_s3_xml_parse)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from urllib.parse import unquote

import botocore.session
import pytest
from botocore.handlers import (
    decode_list_object,
    decode_list_object_v2,
    decode_list_object_versions,
    parse_get_bucket_location,
)
from botocore.parsers import RestXMLParser

from gateway.s3 import xml as s3xml
from gateway.s3 import xml_multipart, xml_parse
from gateway.s3.xml import ListEntry, ListingPage
from gateway.s3.xml_multipart import PartEntry, UploadEntry

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
WHEN = datetime(2009, 10, 12, 17, 50, 30, 123456, tzinfo=UTC)
ETAG = "9b2cf535f27731c974343645a3985328"
OWNER = ("75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a", "alice")

_S3_MODEL = botocore.session.get_session().get_service_model("s3")


def botocore_parse(operation: str, body: bytes) -> dict:
    """Parse `body` exactly as boto3 would parse the response to `operation`."""
    shape = _S3_MODEL.operation_model(operation).output_shape
    parsed = RestXMLParser().parse({"body": body, "headers": {}, "status_code": 200}, shape)
    parsed.pop("ResponseMetadata")
    return parsed


# --- golden outputs ------------------------------------------------------------------------


def test_format_timestamp() -> None:
    assert s3xml.format_timestamp(WHEN) == "2009-10-12T17:50:30.123Z"
    assert s3xml.format_timestamp(datetime(2009, 10, 12, 17, 50, 30)) == "2009-10-12T17:50:30.000Z"
    plus_two = datetime(2009, 10, 12, 19, 50, 30, tzinfo=timezone(timedelta(hours=2)))
    assert s3xml.format_timestamp(plus_two) == "2009-10-12T17:50:30.000Z"


def test_list_buckets_golden() -> None:
    body = s3xml.list_buckets_xml(OWNER[0], "alice", [("b1", WHEN, None), ("b.2", WHEN, None)])
    assert body.decode() == (
        f"{DECL}<ListAllMyBucketsResult {NS}>"
        f"<Owner><ID>{OWNER[0]}</ID><DisplayName>alice</DisplayName></Owner>"
        "<Buckets>"
        "<Bucket><Name>b1</Name><CreationDate>2009-10-12T17:50:30.123Z</CreationDate></Bucket>"
        "<Bucket><Name>b.2</Name><CreationDate>2009-10-12T17:50:30.123Z</CreationDate></Bucket>"
        "</Buckets></ListAllMyBucketsResult>"
    )
    parsed = botocore_parse("ListBuckets", body)
    assert parsed["Owner"] == {"ID": OWNER[0], "DisplayName": "alice"}
    assert [b["Name"] for b in parsed["Buckets"]] == ["b1", "b.2"]
    assert parsed["Buckets"][0]["CreationDate"] == WHEN.replace(microsecond=123000)


def test_list_buckets_paged() -> None:
    body = s3xml.list_buckets_xml("id", "", [("a1", WHEN, "eu-west-1")], prefix="a",
                                  continuation="tok")
    parsed = botocore_parse("ListBuckets", body)
    assert parsed["Owner"] == {"ID": "id"}
    assert parsed["Buckets"][0]["BucketRegion"] == "eu-west-1"
    assert parsed["ContinuationToken"] == "tok"
    assert parsed["Prefix"] == "a"


V2_PAGE = ListingPage(
    name="bkt",
    prefix="quux ab/",
    delimiter="/",
    max_keys=2,
    is_truncated=True,
    contents=[
        ListEntry("quux ab/asdf+b&c", WHEN, ETAG, 11, checksum_algorithm="CRC32", owner=OWNER),
        ListEntry("quux ab/é~*\n", WHEN, ETAG + "-2", 0, storage_class="GLACIER"),
    ],
    common_prefixes=["quux ab/foo+1/"],
    encoding_type="url",
    start_after="quux ab/",
    continuation_token="prev",
    next_continuation_token="next/tok=",
)


def test_list_objects_v2_url_encoded_golden() -> None:
    body = s3xml.list_objects_v2_xml(V2_PAGE)
    assert body.decode() == (
        f"{DECL}<ListBucketResult {NS}>"
        "<Name>bkt</Name><Prefix>quux%20ab/</Prefix><StartAfter>quux%20ab/</StartAfter>"
        "<ContinuationToken>prev</ContinuationToken>"
        "<NextContinuationToken>next/tok=</NextContinuationToken>"
        "<KeyCount>3</KeyCount><MaxKeys>2</MaxKeys><Delimiter>/</Delimiter>"
        "<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
        "<Contents><Key>quux%20ab/asdf%2Bb%26c</Key>"
        "<LastModified>2009-10-12T17:50:30.123Z</LastModified>"
        f'<ETag>"{ETAG}"</ETag><ChecksumAlgorithm>CRC32</ChecksumAlgorithm>'
        "<Size>11</Size><StorageClass>STANDARD</StorageClass></Contents>"
        "<Contents><Key>quux%20ab/%C3%A9~%2A%0A</Key>"
        "<LastModified>2009-10-12T17:50:30.123Z</LastModified>"
        f'<ETag>"{ETAG}-2"</ETag><Size>0</Size><StorageClass>GLACIER</StorageClass></Contents>'
        "<CommonPrefixes><Prefix>quux%20ab/foo%2B1/</Prefix></CommonPrefixes>"
        "</ListBucketResult>"
    )


def test_list_objects_v2_botocore_round_trip() -> None:
    parsed = botocore_parse("ListObjectsV2", s3xml.list_objects_v2_xml(V2_PAGE))
    # What boto3 does when it set encoding-type=url itself (the default for listings).
    decode_list_object_v2(parsed, {"encoding_type_auto_set": True})
    assert [c["Key"] for c in parsed["Contents"]] == ["quux ab/asdf+b&c", "quux ab/é~*\n"]
    assert parsed["CommonPrefixes"] == [{"Prefix": "quux ab/foo+1/"}]
    assert parsed["Prefix"] == parsed["StartAfter"] == "quux ab/"
    assert parsed["IsTruncated"] is True
    assert parsed["KeyCount"] == 3
    assert parsed["NextContinuationToken"] == "next/tok="
    assert parsed["Contents"][0]["ETag"] == f'"{ETAG}"'
    assert parsed["Contents"][0]["Size"] == 11
    assert parsed["Contents"][0]["ChecksumAlgorithm"] == ["CRC32"]
    assert parsed["Contents"][0]["LastModified"] == WHEN.replace(microsecond=123000)
    assert "Owner" not in parsed["Contents"][0]


def test_list_objects_v2_fetch_owner_and_plain() -> None:
    page = ListingPage(
        name="b",
        contents=[ListEntry("a b", WHEN, ETAG, 1, owner=OWNER)],
        fetch_owner=True,
        delimiter="",
    )
    body = s3xml.list_objects_v2_xml(page)
    assert b"<Delimiter>" not in body  # AWS leaves out an empty delimiter
    assert b"<Prefix></Prefix>" in body
    parsed = botocore_parse("ListObjectsV2", body)
    assert parsed["Contents"][0]["Key"] == "a b"
    assert parsed["Contents"][0]["Owner"] == {"ID": OWNER[0], "DisplayName": "alice"}
    assert parsed["IsTruncated"] is False


def test_list_objects_v1() -> None:
    page = ListingPage(
        name="b",
        prefix="p/",
        delimiter="/",
        marker="p/a b",
        next_marker="p/c d",
        is_truncated=True,
        contents=[ListEntry("p/c d", WHEN, ETAG, 5, owner=OWNER)],
        common_prefixes=["p/x/"],
        encoding_type="url",
    )
    body = s3xml.list_objects_v1_xml(page)
    assert b"<Marker>p/a%20b</Marker><NextMarker>p/c%20d</NextMarker>" in body
    parsed = botocore_parse("ListObjects", body)
    decode_list_object(parsed, {"encoding_type_auto_set": True})
    assert parsed["Marker"] == "p/a b"
    assert parsed["NextMarker"] == "p/c d"
    assert parsed["Contents"][0]["Key"] == "p/c d"
    assert parsed["Contents"][0]["Owner"]["ID"] == OWNER[0]
    assert parsed["CommonPrefixes"] == [{"Prefix": "p/x/"}]
    assert parsed["MaxKeys"] == 1000


def test_list_object_versions() -> None:
    page = ListingPage(
        name="b",
        key_marker="a b",
        version_id_marker="v0",
        next_key_marker="z z",
        next_version_id_marker="v9",
        is_truncated=True,
        encoding_type="url",
        contents=[
            ListEntry("k 1", WHEN, is_delete_marker=True, version_id="dm1", owner=OWNER),
            ListEntry("k 1", WHEN, ETAG, 3, version_id="v1", is_latest=False, owner=OWNER),
            ListEntry("k2", WHEN, ETAG, 4),
        ],
    )
    body = s3xml.list_object_versions_xml(page)
    assert (
        b"<DeleteMarker><Key>k%201</Key><VersionId>dm1</VersionId><IsLatest>true</IsLatest>"
        b"<LastModified>2009-10-12T17:50:30.123Z</LastModified>"
        b"<Owner><ID>" in body
    )
    parsed = botocore_parse("ListObjectVersions", body)
    decode_list_object_versions(parsed, {"encoding_type_auto_set": True})
    assert parsed["KeyMarker"] == "a b"
    assert parsed["NextKeyMarker"] == "z z"
    assert parsed["VersionIdMarker"] == "v0"
    assert parsed["NextVersionIdMarker"] == "v9"
    assert [(d["Key"], d["VersionId"], d["IsLatest"]) for d in parsed["DeleteMarkers"]] == [
        ("k 1", "dm1", True)
    ]
    versions = [(v["Key"], v["VersionId"], v["IsLatest"], v["Size"]) for v in parsed["Versions"]]
    assert versions == [("k 1", "v1", False, 3), ("k2", "null", True, 4)]


def test_delete_result_golden() -> None:
    body = s3xml.delete_result_xml(
        [("a&b", None, False, None), ("c", "v1", True, "dm2")],
        [("d", "v3", "AccessDenied", "Access Denied")],
    )
    assert body.decode() == (
        f"{DECL}<DeleteResult {NS}>"
        "<Deleted><Key>a&amp;b</Key></Deleted>"
        "<Deleted><Key>c</Key><VersionId>v1</VersionId><DeleteMarker>true</DeleteMarker>"
        "<DeleteMarkerVersionId>dm2</DeleteMarkerVersionId></Deleted>"
        "<Error><Key>d</Key><VersionId>v3</VersionId><Code>AccessDenied</Code>"
        "<Message>Access Denied</Message></Error>"
        "</DeleteResult>"
    )
    parsed = botocore_parse("DeleteObjects", body)
    assert parsed["Deleted"] == [
        {"Key": "a&b"},
        {"Key": "c", "VersionId": "v1", "DeleteMarker": True, "DeleteMarkerVersionId": "dm2"},
    ]
    assert parsed["Errors"] == [
        {"Key": "d", "VersionId": "v3", "Code": "AccessDenied", "Message": "Access Denied"}
    ]


def test_location_golden() -> None:
    assert s3xml.location_xml("us-east-1").decode() == (
        f"{DECL}<LocationConstraint {NS}></LocationConstraint>"
    )
    for region, expected in (("us-east-1", None), ("eu-west-1", "eu-west-1")):
        parsed: dict = {}
        response = SimpleNamespace(raw=object(), content=s3xml.location_xml(region))
        parse_get_bucket_location(parsed, response)  # botocore's own handler for this call
        assert parsed == {"LocationConstraint": expected}


def test_versioning_and_tagging_read_back() -> None:
    assert botocore_parse("GetBucketVersioning", s3xml.versioning_xml(None)) == {}
    parsed = botocore_parse("GetBucketVersioning", s3xml.versioning_xml("Enabled", "Disabled"))
    assert parsed == {"Status": "Enabled", "MFADelete": "Disabled"}
    body = s3xml.tagging_xml({"a": "1", "b&c": ""})
    parsed = botocore_parse("GetObjectTagging", body)
    assert parsed["TagSet"] == [{"Key": "a", "Value": "1"}, {"Key": "b&c", "Value": ""}]
    assert xml_parse.parse_tagging(body) == {"a": "1", "b&c": ""}


def test_multipart_builders_read_back() -> None:
    parsed = botocore_parse("CreateMultipartUpload", xml_multipart.initiate_multipart_xml("b", "k", "u1"))
    assert parsed == {"Bucket": "b", "Key": "k", "UploadId": "u1"}

    body = xml_multipart.complete_multipart_xml(
        "http://h/b/k", "b", "k", ETAG + "-3", {"CRC32": "AAAAAA=="}, "COMPOSITE"
    )
    parsed = botocore_parse("CompleteMultipartUpload", body)
    assert parsed == {
        "Location": "http://h/b/k",
        "Bucket": "b",
        "Key": "k",
        "ETag": f'"{ETAG}-3"',
        "ChecksumCRC32": "AAAAAA==",
        "ChecksumType": "COMPOSITE",
    }

    body = xml_multipart.list_parts_xml(
        "b",
        "k",
        "u1",
        [PartEntry(1, WHEN, ETAG, 5 << 20, {"SHA256": "x="}), PartEntry(2, WHEN, ETAG, 7)],
        part_number_marker=0,
        next_part_number_marker=2,
        max_parts=2,
        is_truncated=True,
        owner=OWNER,
        initiator=OWNER,
        checksum_algorithm="SHA256",
    )
    parsed = botocore_parse("ListParts", body)
    assert [(p["PartNumber"], p["Size"]) for p in parsed["Parts"]] == [(1, 5 << 20), (2, 7)]
    assert parsed["Parts"][0]["ChecksumSHA256"] == "x="
    assert parsed["NextPartNumberMarker"] == 2
    assert parsed["IsTruncated"] is True
    assert parsed["Initiator"]["ID"] == OWNER[0]
    assert parsed["ChecksumAlgorithm"] == "SHA256"

    body = xml_multipart.list_multipart_uploads_xml(
        "b",
        [UploadEntry("k 1", "u1", WHEN, owner=OWNER, initiator=OWNER)],
        prefix="k",
        delimiter="/",
        common_prefixes=["k/"],
        encoding_type="url",
        next_key_marker="k 1",
        next_upload_id_marker="u1",
        is_truncated=True,
    )
    assert b"<Key>k%201</Key>" in body
    parsed = botocore_parse("ListMultipartUploads", body)
    assert unquote(parsed["Uploads"][0]["Key"]) == "k 1"
    assert parsed["Uploads"][0]["Initiated"] == WHEN.replace(microsecond=123000)
    assert parsed["NextUploadIdMarker"] == "u1"
    assert parsed["CommonPrefixes"] == [{"Prefix": "k/"}]


def test_copy_results_read_back() -> None:
    parsed = botocore_parse(
        "CopyObject", s3xml.copy_object_result_xml(ETAG, WHEN, {"CRC32C": "abc="})
    )
    assert parsed["CopyObjectResult"] == {
        "ETag": f'"{ETAG}"',
        "LastModified": WHEN.replace(microsecond=123000),
        "ChecksumCRC32C": "abc=",
    }
    parsed = botocore_parse("UploadPartCopy", s3xml.copy_part_result_xml(f'"{ETAG}"', WHEN))
    assert parsed["CopyPartResult"]["ETag"] == f'"{ETAG}"'  # already-quoted ETags kept


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("a b", "a%20b"),
        ("a+b", "a%2Bb"),
        ("dir/file.txt", "dir/file.txt"),
        ("~_-.", "~_-."),
        ("é", "%C3%A9"),
        ("%&=?#", "%25%26%3D%3F%23"),
    ],
)
def test_url_encode(raw: str, encoded: str) -> None:
    assert s3xml.url_encode(raw) == encoded
    assert unquote(encoded) == raw


def test_listing_restore_status_golden_and_parsed() -> None:
    """RestoreStatus in listing entries (x-amz-optional-object-attributes), as AWS writes it."""
    later = datetime(2012, 12, 21, tzinfo=UTC)
    entries = [ListEntry(key="done", last_modified=WHEN, etag=ETAG, version_id="v1",
                         storage_class="GLACIER", restore_status=(False, later)),
               ListEntry(key="going", last_modified=WHEN, etag=ETAG, version_id="v2",
                         storage_class="GLACIER", restore_status=(True, None)),
               ListEntry(key="plain", last_modified=WHEN, etag=ETAG, version_id="v3")]
    page = ListingPage(name="b", contents=entries)
    body = s3xml.list_objects_v2_xml(page).decode()
    assert ("<StorageClass>GLACIER</StorageClass><RestoreStatus><IsRestoreInProgress>false"
            "</IsRestoreInProgress><RestoreExpiryDate>2012-12-21T00:00:00.000Z"
            "</RestoreExpiryDate></RestoreStatus></Contents>") in body
    assert body.count("<RestoreStatus>") == 2
    for op, doc, field in (("ListObjectsV2", s3xml.list_objects_v2_xml, "Contents"),
                           ("ListObjects", s3xml.list_objects_v1_xml, "Contents"),
                           ("ListObjectVersions", s3xml.list_object_versions_xml, "Versions")):
        parsed = botocore_parse(op, doc(page))[field]
        assert [e.get("RestoreStatus") for e in parsed] == [
            {"IsRestoreInProgress": False, "RestoreExpiryDate": later},
            {"IsRestoreInProgress": True}, None]
