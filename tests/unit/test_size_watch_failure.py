"""A failing size watch does not end a volume's lease renewals (review22g F8).

`VolumeHandle._renew_loop` tells `on_grown` (the mount daemon's grow-on-record) the record's
size after each renewal; an exception from it that is not a StorageError (a thread that
could not be started) ended the loop, and the lease was renewed only lazily from then on.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from storage.volumes import VolumeService
from tests.unit.test_volume_journal import Sim, with_sim


def test_the_renewals_go_on_after_the_size_watch_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body(_sim: Sim, svc: VolumeService) -> None:
        await svc.create("t", "v", 1 << 20)
        h = await svc.open("t", "v", holder="w", lease_ttl_s=0.3)
        calls, three = 0, asyncio.Event()

        def watch(_size: int) -> None:
            nonlocal calls
            calls += 1
            if calls >= 3:
                three.set()
            raise RuntimeError("can't start new thread")

        h.on_grown = watch
        try:
            await asyncio.wait_for(three.wait(), 30)  # old code: one call, then no renewal
        finally:
            await h.close()

    with caplog.at_level(logging.ERROR, logger="tessera.volumes"):
        with_sim(body)
    assert sum("size watch failed" in r.getMessage() for r in caplog.records) == 1
