"""mend21f: punching a pack is done in bounded steps, and a PUT queued during a long punch
is committed between them, never held behind the whole pack (review21f F3: one pack's
punch was one committer step, every PUT and DELETE on the disk waiting for it)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path

import pytest

from nodes import packformat as pf
from nodes import packpunch
from nodes.packstore import PackStore

BODY = 9 * 1024  # at least one whole block inside every body: each is punched
COUNT = 600  # a pack's worth, more than two punch steps of records


def test_a_put_queued_during_a_long_punch_goes_between_its_steps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = PackStore(tmp_path, seal_bytes=COUNT * (BODY + pf.OVERHEAD) // 2, reserve_bytes=0)
    s.open()
    try:
        sids = [f"{i:032x}.1" for i in range(1, COUNT + 1)]

        async def fill() -> None:
            await asyncio.gather(*(s.put(sid, [bytes([i % 251 + 1]) * BODY])
                                   for i, sid in enumerate(sids)))
            await asyncio.gather(*(s.delete(sid) for sid in sids))
        asyncio.run(fill())
        first = min(s.sizes)
        assert first != s._active and s.live.get(first, 0) == 0  # a sealed pack, all dead
        events: list[str] = []
        put: list[concurrent.futures.Future[int]] = []
        real = packpunch.punch_hole

        def punch_hole(fd: int, offset: int, length: int) -> None:
            if not put:  # the first punch: a PUT arrives now, while the pack is punched
                put.append(s._enqueue(pf.PUT, f"{COUNT + 1:032x}.1", [b"x" * 100], False,
                                      None))
                put[0].add_done_callback(lambda _: events.append("put"))
            real(fd, offset, length)
            events.append("punch")
        monkeypatch.setattr(packpunch, "punch_hole", punch_hole)
        assert asyncio.run(s.punch(min_dead=0)) > 0
        assert put and put[0].result() == -1
        done = events.index("put")
        print("punches before the PUT:", done, "after:", len(events) - done - 1)
        assert "punch" in events[done:], "the PUT waited for the whole pack's punch"
        assert done <= packpunch.STEP_RECORDS  # at most one step ahead of it
    finally:
        s.close()
