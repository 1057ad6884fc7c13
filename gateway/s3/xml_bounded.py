"""A cheap check that an S3 request body's XML is no bigger in shape than S3 documents are,
before it is parsed.

An 8 MiB DeleteObjects body (the size 1,000 escaped keys may need) parsed whole held a
gateway worker's event loop 3.6-6.4 s when it was 2,000,000 empty elements, 900,000 nested
ones or one start tag of 700,000 attributes (expat alone spends ~2 s on that), and built
hundreds of MB of elements, before the schema checks refused it. `check_shape` refuses, at
the speed of a byte scan, a body with more '<' than any S3 document has (`TAGS_MAX`: the
start and end tags of 10,000 completed parts, each with its children; a '<' in text must be
escaped, and one inside a CDATA section, comment or processing instruction is not markup and
is not counted) or a run of `MARKUP_RUN_MAX` bytes without a '>' (no S3 start tag is that
long: the longest text, an escaped 1,024-byte key, is a few KiB). `parse` then parses it,
refusing elements nested deeper than `DEPTH_MAX` as the parser meets them (S3 documents
nest a few levels): 100,000 nested elements are within the '<' budget and cost ~0.5 s of
parsing and tree building before the schema checks refused them.
"""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree as ET

from defusedxml.ElementTree import DefusedXMLParser

TAGS_MAX = 200_000
MARKUP_RUN_MAX = 64 * 1024
DEPTH_MAX = 32  # the deepest S3 document (a lifecycle rule's And/Tag/Key) nests 6


# what opens a section whose '<' are text, and what closes it
VERBATIM = {b"<![CDATA[": b"]]>", b"<!--": b"-->", b"<?": b"?>"}
OPENER = re.compile(b"|".join(re.escape(opener) for opener in VERBATIM))


class OverBudget(ValueError):
    """The body is bigger in shape than any S3 document."""


def markup_over(body: bytes, most: int) -> bool:
    """Whether `body` has more than `most` '<' outside CDATA sections, comments and
    processing instructions (a section's opening '<' counts: so does an unclosed section's
    every '<'). Each section found costs a search and two counts and is one '<' of markup,
    so the scan stops after at most `most` + 1 of them."""
    tags = 0
    at = 0
    while (opened := OPENER.search(body, at)) is not None:
        start = opened.start()
        tags += body.count(b"<", at, start) + 1
        close = body.find(VERBATIM[opened[0]], opened.end())
        if close < 0:  # never closed: every '<' after the opener counts too
            return tags + body.count(b"<", start + 1) > most
        if tags > most:
            return True
        at = close + len(VERBATIM[opened[0]])
    return tags + body.count(b"<", at) > most


def check_shape(body: bytes) -> None:
    """OverBudget if `body` has more than TAGS_MAX '<' of markup or MARKUP_RUN_MAX bytes
    without '>'."""
    tags = body.count(b"<")
    if tags > TAGS_MAX and markup_over(body, TAGS_MAX):
        raise OverBudget(f"{tags} '<', over {TAGS_MAX} of them markup")
    run = 0  # bytes since the last '>' before the current piece
    for at in range(0, len(body), MARKUP_RUN_MAX):  # a run inside one piece is short enough
        end = min(at + MARKUP_RUN_MAX, len(body))
        first = body.find(b">", at, end)
        if first < 0:
            run += end - at
        else:
            run += first - at
            if run > MARKUP_RUN_MAX:
                break
            run = end - body.rfind(b">", at, end) - 1
        if run > MARKUP_RUN_MAX:
            break
    else:
        return
    raise OverBudget(f"over {MARKUP_RUN_MAX} bytes without '>'")


class _DepthCapped(ET.TreeBuilder):
    """ElementTree's tree builder, raising OverBudget at an element nested deeper than
    DEPTH_MAX (the parser stops there)."""

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0

    def start(self, tag: Any, attrs: Any) -> ET.Element:
        self._depth += 1
        if self._depth > DEPTH_MAX:
            raise OverBudget(f"elements nested deeper than {DEPTH_MAX}")
        return super().start(tag, attrs)

    def end(self, tag: Any) -> ET.Element:
        self._depth -= 1
        return super().end(tag)


def parse(body: bytes) -> ET.Element:
    """`body`'s root element, DTDs, entities and external references refused (defusedxml),
    once `check_shape` passed it; OverBudget past DEPTH_MAX nested elements."""
    check_shape(body)
    parser = DefusedXMLParser(target=_DepthCapped(), forbid_dtd=True)
    parser.feed(body)
    return parser.close()
