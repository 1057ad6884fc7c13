"""Version ids never start with '-', which command lines (the AWS CLI's --version-id) read
as an option; the CLI test failed whenever the random id drew one (1 in 64)."""

from __future__ import annotations

import pytest

from storage import version_ids


def test_a_drawn_id_starting_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter(["-gtQn53diEEjj3mEMQh8t6uBkyerxwrY", "--xx", "gtQn53diEEjj3mEMQh8t6uBkyerxwrY"])
    monkeypatch.setattr(version_ids.secrets, "token_urlsafe", lambda n: next(draws))
    assert version_ids.new_version_id() == "gtQn53diEEjj3mEMQh8t6uBkyerxwrY"


def test_ids_are_url_safe_and_never_lead_with_a_dash() -> None:
    ids = {version_ids.new_version_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert not [v for v in ids if v.startswith("-")]
    assert all(len(v) == 32 and v.replace("-", "").replace("_", "").isalnum() for v in ids)
