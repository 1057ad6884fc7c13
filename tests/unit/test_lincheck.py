"""The linearizability checker of the multi-gateway tests finds what it must."""

from __future__ import annotations

import math

from tests.lincheck import Op, check


def test_sequential_history_is_linearizable() -> None:
    h = [Op("k", "w", b"1", 0, 1), Op("k", "r", b"1", 2, 3), Op("k", "w", None, 4, 5),
         Op("k", "r", None, 6, 7)]
    assert check(h) == {}


def test_a_stale_read_after_a_write_answered_is_caught() -> None:
    h = [Op("k", "w", b"1", 0, 1), Op("k", "w", b"2", 2, 3), Op("k", "r", b"1", 4, 5)]
    assert list(check(h)) == ["k"]


def test_a_deleted_key_coming_back_is_caught() -> None:
    h = [Op("k", "w", b"1", 0, 1), Op("k", "w", None, 2, 3), Op("k", "r", b"1", 4, 5)]
    assert list(check(h)) == ["k"]


def test_overlapping_writes_may_be_read_in_either_order() -> None:
    h = [Op("k", "w", b"1", 0, 10), Op("k", "w", b"2", 1, 9), Op("k", "r", b"1", 11, 12)]
    assert check(h) == {}
    h.append(Op("k", "r", b"2", 13, 14))  # but not flip back afterwards
    assert list(check(h)) == ["k"]


def test_a_write_without_an_answer_may_apply_late_or_never() -> None:
    late = [Op("k", "w", b"1", 0, 1), Op("k", "w", b"2", 2, math.inf),
            Op("k", "r", b"1", 3, 4), Op("k", "r", b"2", 5, 6)]
    assert check(late) == {}
    never = [Op("k", "w", b"1", 0, 1), Op("k", "w", b"2", 2, math.inf),
             Op("k", "r", b"1", 30, 31)]
    assert check(never) == {}
    invented = [Op("k", "w", b"1", 0, 1), Op("k", "r", b"3", 2, 3)]
    assert list(check(invented)) == ["k"]


def test_keys_are_checked_apart() -> None:
    h = [Op("a", "w", b"1", 0, 1), Op("b", "r", b"1", 2, 3)]
    assert list(check(h)) == ["b"]


def test_a_stale_read_among_many_unanswered_writes_is_found_at_once() -> None:
    """Twenty writes that never answered (a paused gateway's) and whose values nobody read,
    then a stale read: the search must not try every subset of those writes (2**20 orders;
    before, it ran for minutes and the integration test timed out instead of failing)."""
    h = [Op("k", "w", b"1", 0, 1), Op("k", "w", b"2", 2, 3)]
    h += [Op("k", "w", f"lost{i}".encode(), 4 + i, math.inf) for i in range(20)]
    h += [Op("k", "r", b"2", 30 + 2 * i, 31 + 2 * i) for i in range(5)]
    h.append(Op("k", "r", b"1", 50, 51))  # stale: b"2" was read since
    assert list(check(h)) == ["k"]
