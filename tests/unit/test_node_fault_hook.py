"""The test hook $TESSERA_TEST_NODE_FAULT is read strictly (`storage.testing.node_faults.parse`):
a malformed or repeated entry raises instead of being dropped, so a typo cannot run a fault
test with no fault in it (review20a)."""

from __future__ import annotations

import pytest

from storage.testing.node_faults import parse


def test_entries_are_stripped_and_each_names_one_node() -> None:
    got = parse(" n1:1:fail, n5:3:die ")
    assert {n: (f.nth, f.mode) for n, f in got.items()} == {"n1": (1, "fail"),
                                                           "n5": (3, "die")}
    assert parse("") == {} and parse("  ") == {}


@pytest.mark.parametrize("value", ["n7:x:fail", "n1:0:fail", "n1:1:crash", "n1:1", ":1:fail",
                                   "n1:1:fail,", "n1:1:fail,n1:2:die", "n5:1:fail, n5:3:die"])
def test_a_malformed_or_repeated_entry_raises(value: str) -> None:
    with pytest.raises(ValueError, match="TESSERA_TEST_NODE_FAULT"):
        parse(value)
