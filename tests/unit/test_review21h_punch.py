"""review21h: packed-shard hole punching after a restart (a re-punch is paced in steps;
a failed group's start survives the restart so the durable copy it replaced is never punched)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from nodes.packstore import PackStore

BODY = 64 * 1024 + 100


def _body(tag: str) -> bytes:
    return random.Random(tag).randbytes(BODY)


def _eio(*_: object) -> None:
    raise OSError(5, "EIO")


def test_a_re_punch_after_a_restart_lets_puts_go_between_packs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart forgets `_punched_dead`, so every pack is punched again; a body already a
    hole is skipped without counting toward a step, so the whole pass over every pack (an
    lseek a record: about 4 us each, 0.23 s for 56,500 records here) is ONE committer step
    and every PUT and DELETE on the disk waits for it (before mend21f: a step a pack)."""
    from nodes import packformat as pf
    from nodes import packpunch
    body, per, packs = 9 * 1024, 20, 8
    seal = per * (body + pf.OVERHEAD)
    s = PackStore(tmp_path, seal_bytes=seal, reserve_bytes=0)
    s.open()
    try:
        sids = [f"{i:032x}.1" for i in range(1, per * packs + 1)]
        for sid in sids:
            asyncio.run(s.put(sid, [b"z" * body]))
        for sid in sids:
            asyncio.run(s.delete(sid))
        assert asyncio.run(s.punch(min_dead=0)) > 0
    finally:
        s.close()
    again = PackStore(tmp_path, seal_bytes=seal, reserve_bytes=0)
    again.open()
    try:
        events: list[str] = []
        put: list[object] = []
        real = packpunch._is_hole

        def is_hole(fd: int, lo: int, hi: int) -> bool:
            if not put:  # a PUT arrives during the re-punch's first step
                fut = again._enqueue(pf.PUT, f"{10**6:032x}.1", [b"x" * 100], False, None)
                fut.add_done_callback(lambda _: events.append("put"))
                put.append(fut)
            events.append("hole")
            return real(fd, lo, hi)
        monkeypatch.setattr(packpunch, "_is_hole", is_hole)
        asyncio.run(again.punch(min_dead=0))
        assert put and put[0].result() == -1  # type: ignore[attr-defined]
        done = events.index("put")
        print("hole checks before the PUT:", done, "after:", len(events) - done - 1)
        assert done <= packpunch.STEP_RECORDS, "the PUT waited for the whole re-punch pass"
    finally:
        again.close()
