"""The conditions of a delete read from its headers: x-amz-if-match-size is an S3 Long of
ASCII digits; anything else is InvalidArgument naming the header (int() alone read '1_0' as
10 and Arabic-Indic digits or surrounding spaces as numbers, so a condition the caller did
not write was applied)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.s3.errors import S3Error
from gateway.s3.handlers.objects import delete_conditions


@pytest.mark.parametrize("raw", ["1_0", "\u0661\u0662", " 10", "10 ", "-1", "+5", "",
                                 "1e3", "0x10", str(1 << 63)])
def test_a_size_that_is_not_ascii_digits_is_refused(raw: str) -> None:
    with pytest.raises(S3Error) as err:
        delete_conditions(CIMultiDict({"x-amz-if-match-size": raw}))
    assert err.value.code == "InvalidArgument"
    assert "x-amz-if-match-size" in str(err.value.message)


@pytest.mark.parametrize("raw,size", [("0", 0), ("10", 10), ("0010", 10),
                                      (str((1 << 63) - 1), (1 << 63) - 1)])
def test_a_size_of_ascii_digits_is_the_condition(raw: str, size: int) -> None:
    cond = delete_conditions(CIMultiDict({"x-amz-if-match-size": raw}))
    assert cond is not None and cond.size == size
