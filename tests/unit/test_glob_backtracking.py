"""review22b: policy globs (Action, Resource, StringLike/ArnLike) are matched without
regex backtracking. Each `*` was a regex `.*`, so `s3:*?*?*?*?*?*?*?*?Z` in a PutBucketPolicy
Action (now checked against all 180 S3 action names) held the event loop for 90 s, and
longer patterns (a policy may be 20 KB) for ever, stalling every tenant on the gateway;
the same held for a StringLike pattern against a long User-Agent on every request."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.s3 import policy
from gateway.s3.errors import S3Error
from gateway.s3.policy_conditions import glob_match

# A backtracking matcher needs about C(len(value), stars) steps on these: years at 40.
STARS = 40


@pytest.mark.timeout(60)
def test_a_pattern_of_many_stars_is_refused_at_once() -> None:
    doc = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:" + "*?" * STARS + "Z",
        "Resource": "arn:aws:s3:::b/*"}]})
    with pytest.raises(S3Error) as e:
        policy.validate(doc, "b")
    assert e.value.message == "Policy has invalid action"


@pytest.mark.timeout(60)
def test_a_many_star_pattern_against_a_long_value_is_decided() -> None:
    assert not glob_match("*a" * STARS + "b", "a" * 8000)
    assert glob_match("*a" * STARS + "*", "a" * 8000)


def _regex(pattern: str, value: str, ignore_case: bool) -> bool:
    """The glob as a regex (the old matcher): the meaning the new one keeps."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) \
        is not None


@given(st.text("aAb*?/\n", max_size=8), st.text("aAb/\n", max_size=10), st.booleans())
def test_the_glob_means_what_the_regex_meant(pattern: str, value: str,
                                             ignore_case: bool) -> None:
    assert glob_match(pattern, value, ignore_case) == _regex(pattern, value, ignore_case)
