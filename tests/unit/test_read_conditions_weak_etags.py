"""GET/HEAD conditions with weak entity tags (`W/"..."`): If-None-Match compares weakly
(a weak tag of the object's ETag is a 304), If-Match strongly (a weak tag never matches:
412), as RFC 7232 sections 3.1 and 3.2 say, which AWS's GetObject and HeadObject
references name for these headers."""

from __future__ import annotations

import pytest

from gateway.s3.errors import S3Error
from gateway.s3.http import check_conditions

ETAG = "0cc175b9c0f1b6a831c399e269772661"


def _answer(headers: dict[str, str]) -> int:
    try:
        check_conditions(headers, ETAG, 1_700_000_000.0, read=True)
    except S3Error as e:
        return e.status
    return 200


@pytest.mark.parametrize("value", [f'W/"{ETAG}"', f'"other", W/"{ETAG}"', f'W/"{ETAG}", "x"'])
def test_if_none_match_compares_weakly(value: str) -> None:
    assert _answer({"If-None-Match": value}) == 304


@pytest.mark.parametrize("value", [f'W/"{ETAG}"', f'"x", W/"{ETAG}"'])
def test_if_match_compares_strongly(value: str) -> None:
    assert _answer({"If-Match": value}) == 412


def test_strong_tags_and_star_are_unchanged() -> None:
    assert _answer({"If-None-Match": f'"{ETAG}"'}) == 304
    assert _answer({"If-None-Match": 'W/"other"'}) == 200
    assert _answer({"If-Match": f'"{ETAG}"'}) == 200
    assert _answer({"If-Match": "*"}) == 200
    assert _answer({"If-None-Match": "*"}) == 304
