"""Request bodies bigger in shape than any S3 document are refused before the XML parser
runs (gateway/s3/xml_bounded.py): parsing them whole held the event loop for seconds."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.s3 import xml_bounded, xml_parse
from gateway.s3.errors import S3Error

ATTRS = b"<Delete><Object " + b" ".join(b'a%d="1"' % i for i in range(20_000)) + b"/></Delete>"


@pytest.mark.parametrize("body", [
    b"<Delete>" + b"<x/>" * 250_000 + b"</Delete>",  # more elements than 10,000 parts have
    b"<Delete>" + b"<a>" * 150_000 + b"</a>" * 150_000 + b"</Delete>",  # nested as deep
    ATTRS,  # one start tag of 20,000 attributes: 190 KB without a '>'
    b"<Delete>" + b"<![CDATA[]]>" * 250_000 + b"</Delete>",  # each section opens with markup
    b"<Delete><Object><Key><![CDATA[" + b"<" * 250_000 + b"</Key></Object></Delete>",  # unclosed
], ids=["elements", "nesting", "attributes", "cdata-sections", "unclosed-cdata"])
def test_bodies_bigger_than_any_s3_document_are_refused_unparsed(
        monkeypatch: pytest.MonkeyPatch, body: bytes) -> None:
    def parsed(*_: Any, **__: Any) -> None:
        raise AssertionError("the body was handed to the XML parser")

    monkeypatch.setattr(xml_bounded, "DefusedXMLParser", parsed)
    with pytest.raises(S3Error) as exc:
        xml_parse.parse_delete_objects(body)
    assert exc.value.code == "MalformedXML"


def test_nesting_within_the_tag_budget_is_refused_as_the_parser_meets_it() -> None:
    """100,000 nested elements are under TAGS_MAX: they were parsed into a tree whole
    (~0.5 s on the event loop) before the schema checks refused them."""
    body = b"<Delete>" + b"<a>" * 99_990 + b"</a>" * 99_990 + b"</Delete>"
    with pytest.raises(S3Error) as exc:
        xml_parse.parse_delete_objects(body)
    assert exc.value.code == "MalformedXML"
    assert exc.value.__notes__ == ["elements nested deeper than 32"]  # not the tree's
    lifecycle = (b"<LifecycleConfiguration><Rule><ID>r</ID><Filter><And><Prefix>p</Prefix>"
                 b"<Tag><Key>k</Key><Value>v</Value></Tag></And></Filter><Status>Enabled"
                 b"</Status><Expiration><Days>1</Days></Expiration></Rule>"
                 b"</LifecycleConfiguration>")
    assert xml_parse.parse_document(lifecycle, "LifecycleConfiguration") is not None


def test_s3_documents_at_their_largest_pass() -> None:
    parts = b"<CompleteMultipartUpload>" + b"".join(
        b"<Part><PartNumber>%d</PartNumber><ETag>\"%s\"</ETag><ChecksumCRC32>AAAAAA==</ChecksumCRC32>"
        b"<ChecksumSHA256>%s</ChecksumSHA256></Part>" % (i, b"a" * 32, b"B" * 44)
        for i in range(1, 10_001)) + b"</CompleteMultipartUpload>"
    assert len(xml_parse.parse_complete_multipart(parts)) == 10_000
    key = "&" * 1024  # 5 KiB escaped
    objects = b"<Delete><Quiet>true</Quiet>" + b"".join(
        b"<Object><Key>%s</Key><VersionId>v</VersionId></Object>"
        % (b"&amp;" * 1024) for _ in range(1000)) + b"</Delete>"
    quiet, entries = xml_parse.parse_delete_objects(objects)
    assert quiet and len(entries) == 1000 and entries[0].key == key


def test_lt_inside_cdata_comments_and_instructions_is_text_not_markup() -> None:
    """A valid DeleteObjects of 1,000 keys, each 1,024 '<' in a CDATA section (1,024,000
    '<' in all), was refused as MalformedXML: every '<' was counted as a tag."""
    key = "<" * 1024
    objects = b"<?xml version='1.0'?><Delete><?note <<<<?><!-- <<<< -->" + b"".join(
        b"<Object><Key><![CDATA[%s]]></Key></Object>" % key.encode()
        for _ in range(1000)) + b"</Delete>"
    quiet, entries = xml_parse.parse_delete_objects(objects)
    assert not quiet and len(entries) == 1000 and {e.key for e in entries} == {key}


def naive_markup(body: bytes) -> int:
    """The '<' of markup in `body`, byte by byte (the reference `markup_over` must match)."""
    tags = at = 0
    while at < len(body):
        if body[at:at + 1] != b"<":
            at += 1
            continue
        tags += 1
        opener = next((o for o in xml_bounded.VERBATIM if body.startswith(o, at)), None)
        if opener is None:
            at += 1
            continue
        close = body.find(xml_bounded.VERBATIM[opener], at + len(opener))
        if close < 0:
            return tags + body.count(b"<", at + 1)
        at = close + len(xml_bounded.VERBATIM[opener])
    return tags


def test_markup_count_matches_a_byte_by_byte_reference() -> None:
    pieces = [b"<", b">", b"a", b"<![CDATA[", b"]]>", b"<!--", b"-->", b"<?", b"?>", b"]]",
              b"--", b"<!", b"?"]
    rng = random.Random(16)
    for _ in range(3000):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randrange(40)))
        tags = naive_markup(body)
        over = xml_bounded.markup_over
        assert over(body, tags - 1) and not over(body, tags), body
