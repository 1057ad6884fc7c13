"""Version ids never start with '-', which command lines (the AWS CLI's --version-id) read
as an option; the CLI test failed whenever the random id drew one (1 in 64). An id says when
it was made (ListObjectVersions finds a marker's place from it); ids of older releases,
32 random characters, and "null" do not."""

from __future__ import annotations

import secrets
import time

import pytest

from storage import version_ids


def test_an_id_says_when_it_was_made_and_old_ids_do_not() -> None:
    now = time.time_ns()
    for ts in (now, 0, 1, (1 << 63) - 1):
        assert version_ids.made_at(version_ids.new_version_id(ts)) == ts
    assert version_ids.made_at("gtQn53diEEjj3mEMQh8t6uBkyerxwrY") is None
    assert version_ids.made_at("null") is None
    old = [secrets.token_urlsafe(24) for _ in range(20000)]  # the form before
    assert [v for v in old if version_ids.made_at(v) is not None] == []
    vid = version_ids.new_version_id(now)
    assert version_ids.made_at(vid[:-1] + ("A" if vid[-1] != "A" else "B")) is None


def test_ids_are_url_safe_and_never_lead_with_a_dash() -> None:
    ids = {version_ids.new_version_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert not [v for v in ids if v.startswith("-")]
    assert all(len(v) == 32 and version_ids.well_formed_version_id(v) for v in ids)


def test_a_version_is_listed_no_earlier_than_its_id_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """review14b #2: the clock stepping back between making an id and committing listed the
    version below its id's time, where a page resuming from it did not look."""
    made = 1_700_000_000 * 10**9
    vid = version_ids.new_version_id(made)
    monkeypatch.setattr(time, "time_ns", lambda: made - 60 * 10**9)
    assert version_ids.commit_sort(vid) == version_ids.version_sort(made, vid)
    assert version_ids.commit_sort("null") == version_ids.version_sort(made - 60 * 10**9,
                                                                       "null")
    monkeypatch.setattr(time, "time_ns", lambda: made + 7)
    assert version_ids.commit_sort(vid) == version_ids.version_sort(made + 7, vid)
