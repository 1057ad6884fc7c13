"""What `tessera volume mount|delete` says while it watches a lease nobody renews
(ops/volumecli.py `_LeaseWatch`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ops.volumecli import _LeaseWatch
from storage.records import pack


@dataclass
class _Item:
    revision: int
    value: bytes


def test_the_countdown_says_each_second_once_and_names_a_stopped_writer(
        capsys: pytest.CaptureFixture[str]) -> None:
    """newuser20 mounted a volume whose writer was SIGSTOPped on the same host: the watch
    printed "no renewal yet, 2s left" twice for each second (one line per poll) and blamed
    "a writer that died on another host". Now one line per whole second, and the first
    line names a stopped writer here as a cause too."""
    watch = _LeaseWatch("vol1", "mounting it")
    item = _Item(1, pack({"holder": "vm:25037", "token": 2}))
    for left in (3.0, 2.4, 2.1, 1.6, 1.2, 0.4, 0.1):
        watch(item, left)
    lines = capsys.readouterr().err.splitlines()
    assert "stopped or died, here or on another host" in lines[0], lines[0]
    assert lines[1:] == [f"volume vol1: no renewal yet, {s}s left" for s in (2, 1, 0)], lines
