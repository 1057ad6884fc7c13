"""review22e L10: `tessera node lost-packs` in table mode said neither that its list (at
most 1000 numbers) was short of the count, nor, after `--ack`, what is still reported."""

from __future__ import annotations

from ops.nodecli import lost_packs_text


def test_a_short_list_says_so() -> None:
    text = lost_packs_text("n1", {"packs_lost": [3, 4], "packs_missing": 1500})
    assert "lost packs 3, 4 (the first 2 of 1500)" in text
    assert "first" not in lost_packs_text("n1", {"packs_lost": [3], "packs_missing": 1})


def test_an_ack_shows_what_is_still_reported() -> None:
    text = lost_packs_text("n1", {"acknowledged": [3], "packs_lost": [4], "packs_missing": 1})
    assert text.splitlines()[0] == "node n1: lost packs acknowledged: 3"
    assert "lost packs 4 " in text.splitlines()[1]
    assert lost_packs_text("n1", {"acknowledged": [], "packs_lost": []}).splitlines() == [
        "node n1: lost packs acknowledged: none", "node n1: no lost pack reported"]
