"""Integers in S3 request bodies (lifecycle Days, RestoreRequest Days, Object Lock retention,
lifecycle size filters): ASCII digits within the schema's int or long, else MalformedXML.

int() alone took Arabic-Indic and other Unicode digits ("١٢" stored as 12), '_' ("1_0"), and
values past 64 bits, which then failed to store as a 500 InternalError. A RestoreRequest's
elements are the schema's: a misspelt or repeated one is MalformedXML, never ignored."""

from __future__ import annotations

import pytest

from gateway.s3.config_lifecycle import parse_lifecycle
from gateway.s3.errors import S3Error
from gateway.s3.handlers.object_lock import parse_configuration
from gateway.s3.handlers.restore import _parse as parse_restore
from gateway.s3.xml_parse import parse_complete_multipart, parse_delete_objects

# Unicode spaces str.strip() removes but XML's whitespace (space, tab, CR, LF) does not hold:
# AWS's parser collapses only the latter around an xs:int
UNICODE_SPACES = ["\u00a05", "5\u00a0", "\u20035", "\u30005", "\u00855", "\u20285"]
BAD = ["١٢", "1_0", "²", "5.0", "", "2147483648", "9" * 30, "9" * 400, "0x10", "1e3",
       *UNICODE_SPACES]


def lifecycle(days: str) -> bytes:
    return (f"<LifecycleConfiguration><Rule><ID>r</ID><Filter/><Status>Enabled</Status>"
            f"<Expiration><Days>{days}</Days></Expiration></Rule></LifecycleConfiguration>"
            ).encode()


def restore(days: str) -> bytes:
    return f"<RestoreRequest><Days>{days}</Days></RestoreRequest>".encode()


def lock(days: str) -> bytes:
    return ("<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule>"
            f"<DefaultRetention><Mode>GOVERNANCE</Mode><Days>{days}</Days></DefaultRetention>"
            "</Rule></ObjectLockConfiguration>").encode()


def code(parse: object, body: bytes) -> str:
    with pytest.raises(S3Error) as ei:
        parse(body)  # type: ignore[operator]
    return ei.value.code


@pytest.mark.parametrize("days", BAD)
def test_bad_days_are_malformed_xml(days: str) -> None:
    assert code(parse_lifecycle, lifecycle(days)) == "MalformedXML"
    assert code(parse_restore, restore(days)) == "MalformedXML"
    # a retention past the limit but within 64 bits is the period's own error
    assert code(parse_configuration, lock(days)) == (
        "InvalidRetentionPeriod" if days == "2147483648" else "MalformedXML")


def test_good_days_still_parse() -> None:
    for text, n in (("7", 7), (" 7 ", 7), ("\n\t 7\t\n ", 7), ("\r\n7", 7),
                    ("2147483647", 2147483647)):
        assert parse_lifecycle(lifecycle(text))[0]["expiration"]["days"] == n
        assert parse_restore(restore(text)) == (n, "Standard")
    assert parse_configuration(lock("30")) == {"mode": "GOVERNANCE", "days": 30}


def test_size_filters_are_longs() -> None:
    body = ("<LifecycleConfiguration><Rule><ID>r</ID><Filter><ObjectSizeGreaterThan>{}"
            "</ObjectSizeGreaterThan></Filter><Status>Enabled</Status><Expiration><Days>1</Days>"
            "</Expiration></Rule></LifecycleConfiguration>")
    rule = parse_lifecycle(body.format(5 * 1024**4 - 1).encode())[0]
    assert rule["filter"]["size_gt"] == 5 * 1024**4 - 1  # past 32 bits: a long
    assert code(parse_lifecycle, body.format("9" * 30).encode()) == "MalformedXML"
    assert code(parse_lifecycle, body.format("١").encode()) == "MalformedXML"


@pytest.mark.parametrize("body", [
    b"<RestoreRequest><Days>1</Days><Days>2</Days></RestoreRequest>",
    b"<RestoreRequest><Dayz>1</Dayz><Days>2</Days></RestoreRequest>",
    b"<RestoreRequest><Days>1</Days><GlacierJobParameters><Tier>Bulk</Tier><Tier>Expedited"
    b"</Tier></GlacierJobParameters></RestoreRequest>",
    b"<RestoreRequest><Days>1</Days><GlacierJobParameters><Teir>Bulk</Teir>"
    b"</GlacierJobParameters></RestoreRequest>",
])
def test_restore_request_unknown_or_repeated_elements(body: bytes) -> None:
    assert code(parse_restore, body) == "MalformedXML"


@pytest.mark.parametrize("number", ["1_0", "١", "\u00a01", "1\u00a0", "+ 1", "0x1"])
def test_part_numbers_are_xml_ints(number: str) -> None:
    """CompleteMultipartUpload's PartNumber is the same xs:int: int() read "1_0" as part 10
    and "١" (Arabic-Indic one) as part 1."""
    body = (f"<CompleteMultipartUpload><Part><PartNumber>{number}</PartNumber>"
            "<ETag>\"e\"</ETag></Part></CompleteMultipartUpload>").encode()
    assert code(parse_complete_multipart, body) == "MalformedXML"
    good = body.replace(number.encode("utf-8"), b" 3\n")
    assert parse_complete_multipart(good)[0][0] == 3


@pytest.mark.parametrize("size", ["1_0", "١", "\u00a01", "0x1", "12"])
def test_delete_condition_sizes_are_refused_whatever_their_form(size: str) -> None:
    """DeleteObjects' per-object Size condition is a directory-bucket condition: refused
    501 NotImplemented on a general-purpose bucket (s3low22), well-formed or not; never
    read as some other number and applied."""
    body = (f"<Delete><Object><Key>k</Key><Size>{size}</Size></Object></Delete>").encode()
    assert code(parse_delete_objects, body) == "NotImplemented"


@pytest.mark.parametrize("extra", [
    "<Type>SELECT</Type><SelectParameters><Expression>x</Expression></SelectParameters>",
    "<Days>1</Days><OutputLocation><S3><BucketName>b</BucketName><Prefix>p</Prefix></S3>"
    "</OutputLocation>",
    "<Days>1</Days><SelectParameters><Expression>x</Expression></SelectParameters>",
    "<Days>1</Days><Type>SELECT</Type>",
])
def test_select_restore_elements_are_refused_not_ignored(extra: str) -> None:
    """Review18b: an OutputLocation or SelectParameters was accepted and a plain restore run
    with them ignored, and a SELECT request without Days (AWS: Days "must not be provided
    for select requests") was MalformedXML; each is NotImplemented."""
    with pytest.raises(S3Error) as ei:
        parse_restore(f"<RestoreRequest>{extra}</RestoreRequest>".encode())
    assert ei.value.code == "NotImplemented"
