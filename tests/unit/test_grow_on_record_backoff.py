"""A mount daemon's grow on a record resize backs off when it fails (review22g F7).

`GrowOnRecord` (gateway/block/growwatch.py) is told the record's size at every lease
renewal (ttl/3, 10 s by default); a grow that always fails (`losetup` refused in a
container) started children and logged a warning each time, for the mount's whole life.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gateway.block import growwatch
from gateway.block.growwatch import RETRY_FIRST_S, RETRY_MAX_S, GrowOnRecord
from gateway.block.mount import MountState


def test_a_failing_grow_is_retried_after_a_doubling_backoff_and_not_at_every_renewal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = MountState(volume="v", tenant="t", target="/m", fuse_dir="/f", pid=1)
    tries: list[float] = []
    fail = True
    now = 0.0

    def grow(*_a: object) -> list[tuple[MountState, str]]:
        tries.append(now)
        return [(st, "losetup: Operation not permitted")] if fail else [(st, "")]

    monkeypatch.setattr(growwatch, "grow_mounted", grow)
    g = GrowOnRecord(tmp_path, "t", "v", 1 << 20)
    g.clock = lambda: now  # type: ignore[method-assign]

    def renewal(at: float) -> None:
        nonlocal now
        now = at
        g(2 << 20)
        for t in threading.enumerate():
            if t.name == "grow-on-record":
                t.join()

    for at in range(0, 2000, 10):  # a renewal every 10 s
        renewal(float(at))
    expect, at, delay = [], 0.0, RETRY_FIRST_S
    while at < 2000:
        expect.append(at)
        at += delay
        delay = min(delay * 2, RETRY_MAX_S)
    assert tries == expect  # 0, 10, 30, 70, 150, 310, 610, ... not 200 tries
    assert g.failures == len(expect) and g.grown_to == 1 << 20
    fail = False
    renewal(at)
    assert g.failures == 0 and g.grown_to == 2 << 20
    renewal(at + 10)  # grown: no more tries
    assert tries[-1] == at
