"""The conditions of a delete read from its headers. x-amz-if-match-size and
x-amz-if-match-last-modified-time are directory-bucket conditions: a general-purpose bucket
refuses them, whatever their value, with 501 NotImplemented (measured against S3:
ministack #1501); If-Match on a delete of one version is refused the same way (LocalStack
#13894). Applying them (as before) honoured a condition AWS would have refused."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.s3.errors import S3Error
from gateway.s3.handlers.objects import delete_conditions


@pytest.mark.parametrize("name,raw", [
    ("x-amz-if-match-size", "10"), ("x-amz-if-match-size", "1_0"),
    ("x-amz-if-match-size", str(1 << 63)),
    ("x-amz-if-match-last-modified-time", "Wed, 01 Jan 2025 00:00:00 GMT"),
    ("x-amz-if-match-last-modified-time", "not a date")])
def test_directory_bucket_conditions_are_not_implemented(name: str, raw: str) -> None:
    for version_id in (None, "v1"):
        with pytest.raises(S3Error) as err:
            delete_conditions(CIMultiDict({name: raw, "If-Match": "*"}), version_id)
        assert err.value.code == "NotImplemented"
        assert err.value.extra.get("Header") == name


@pytest.mark.parametrize("value", ["*", '"abc"'])
def test_if_match_on_a_version_is_not_implemented(value: str) -> None:
    with pytest.raises(S3Error) as err:
        delete_conditions(CIMultiDict({"If-Match": value}), "v1")
    assert err.value.code == "NotImplemented"
    assert err.value.extra.get("Header") == "If-Match"


def test_if_match_on_the_current_object_is_the_condition() -> None:
    cond = delete_conditions(CIMultiDict({"If-Match": '"abc"'}))
    assert cond is not None and cond.if_match == "abc" and cond.size is None
    assert delete_conditions(CIMultiDict({})) is None
