"""Pack compaction (nodes.packstore, issue 17 step 8): sealed packs mostly dead are copied
forward and unlinked; live shards keep their bytes and write time, deleted ones never come
back (the tombstone carry-forward rule), and a kill -9 at any point of it recovers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nodes import packformat as pf
from nodes import packsteps
from nodes.packstore import PackStore

SIDS = [f"{i:032x}.{i % 6}" for i in range(1, 13)]


def body_of(sid: str, size: int = 150) -> bytes:
    return hashlib.shake_256(sid.encode()).digest(size)


def read(s: PackStore, sid: str) -> bytes | None:
    loc = s.locate(sid)
    return None if loc is None else s.read(loc)


def packs(s: PackStore) -> list[str]:
    return sorted(p.name for p in s.pack_dir.glob("*.pack"))


def reopen(s: PackStore) -> PackStore:
    s.close()
    n = PackStore(s.root, s.seal_bytes, s.compact_ratio, s.reserve.size)
    n.open()
    return n


def count_records(s: PackStore, kind: int) -> int:
    n = 0
    for p in s.pack_dir.glob("*.pack"):
        data = p.read_bytes()
        n += sum(r.kind == kind for r in pf.scan(pf.bytes_reader(data), len(data)).records)
    return n


def test_live_records_move_forward_and_dead_packs_go(tmp_path: Path) -> None:
    """Three shards a pack, two of each deleted: the sealed packs (a third live) are copied
    forward (bytes and write time kept) and unlinked; a restart agrees; live counts add up."""
    s = PackStore(tmp_path, seal_bytes=3 * (150 + pf.OVERHEAD))
    s.open()

    async def fill() -> None:
        for sid in SIDS:
            await s.put(sid, [body_of(sid)])

    async def thin() -> int:
        for sid in SIDS[::3] + SIDS[1::3]:
            await s.delete(sid)
        return await s.compact()
    try:
        asyncio.run(fill())
        before = packs(s)
        times = {sid: s.locate(sid).time_ns for sid in SIDS}  # type: ignore[union-attr]
        copied = asyncio.run(thin())
    except BaseException:
        s.close()
        raise
    keep = SIDS[2::3]
    assert copied >= len(keep) * (150 + pf.OVERHEAD)
    assert s.compacted >= 3 and len(packs(s)) < len(before) + 3
    for sid in SIDS:
        assert read(s, sid) == (body_of(sid) if sid in keep else None)
    s = reopen(s)
    try:
        for sid in SIDS:
            assert read(s, sid) == (body_of(sid) if sid in keep else None), sid
        assert {sid: s.locate(sid).time_ns for sid in keep} == \
            {sid: times[sid] for sid in keep}  # type: ignore[union-attr]
        live: dict[int, int] = {}
        for loc in s.index.values():
            live[loc.seq] = live.get(loc.seq, 0) + loc.length + pf.OVERHEAD
        assert {k: v for k, v in s.live.items() if v} == live
        assert s.candidates() == [] or all(s.live[q] for q in s.candidates())
    finally:
        s.close()


def test_a_tombstone_is_carried_while_an_older_pack_may_hold_its_shard(tmp_path: Path) -> None:
    """X's PUT sits in a pack kept (mostly live); its tombstone's pack is compacted away:
    without the tombstone copied forward, a restart would bring X back."""
    big = 2000
    s = PackStore(tmp_path, seal_bytes=big + 150 + 2 * pf.OVERHEAD)
    s.open()
    x, filler = SIDS[0], SIDS[1]

    async def go() -> None:
        await s.put(x, [body_of(x)])
        await s.put(filler, [body_of(filler, big)])  # pack 1 sealed, mostly live
        await s.delete(x)  # pack 2: the tombstone
        await s.put(SIDS[2], [body_of(SIDS[2], big + 150)])  # pack 2 sealed, 3 active
        await s.delete(SIDS[2])
        await s.compact()
    try:
        asyncio.run(go())
        assert "0000000000000002.pack" not in packs(s) and "0000000000000001.pack" in packs(s)
    finally:
        s.close()
    s = reopen(s)
    try:
        assert s.locate(x) is None and read(s, filler) == body_of(filler, big)
        assert s.locate(SIDS[2]) is None
    finally:
        s.close()


def test_tombstones_are_dropped_when_no_older_pack_exists(tmp_path: Path) -> None:
    s = PackStore(tmp_path, seal_bytes=300)
    s.open()
    a, b = SIDS[:2]

    async def go() -> None:
        await s.put(a, [body_of(a)])
        await s.delete(a)
        await s.put(b, [body_of(b)])  # pack 1 (PUT a, TOMBSTONE a, PUT b) sealed
        await s.delete(b)  # pack 2
        await s.compact()
    try:
        asyncio.run(go())
        # Pack 1 went and no pack older than it exists: its tombstone was not copied.
        assert packs(s) == ["0000000000000002.pack"]
        assert count_records(s, pf.TOMBSTONE) == 1 and s.index == {}
    finally:
        s.close()


def test_compaction_keeps_a_replaced_shards_newest_bytes(tmp_path: Path) -> None:
    s = PackStore(tmp_path, seal_bytes=300)
    s.open()

    async def go() -> None:
        for sid in SIDS[:4]:
            await s.put(sid, [body_of(sid)])
        await s.put(SIDS[0], [b"newer"], replace=True)
        await s.delete(SIDS[1])
        await s.compact()
    try:
        asyncio.run(go())
    finally:
        s.close()
    s = reopen(s)
    try:
        assert read(s, SIDS[0]) == b"newer" and s.locate(SIDS[1]) is None
        assert all(read(s, sid) == body_of(sid) for sid in SIDS[2:4])
    finally:
        s.close()


def test_puts_queued_during_a_compaction_go_between_its_steps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step copies at most STEP_BYTES, then the groups queued meanwhile are written first:
    a PUT queued while the first step runs is durable before the second step starts."""
    monkeypatch.setattr(packsteps, "STEP_BYTES", 1)  # one record a step
    s = PackStore(tmp_path, seal_bytes=3 * (150 + pf.OVERHEAD), compact_ratio=0.6)
    s.open()
    seen: list[tuple[str, bool]] = []
    late = SIDS[11]
    holder: dict[str, asyncio.AbstractEventLoop] = {}

    def hook(point: str, seq: int) -> None:
        if point != "copied":
            return
        seen.append((point, s.locate(late) is not None))
        if len(seen) == 1:  # in the committer thread: queue a PUT from the loop
            asyncio.run_coroutine_threadsafe(s.put(late, [b"late"]), holder["loop"])
            with s._cond:
                while not s._pending:  # the loop's task has queued it
                    s._cond.wait()

    async def go() -> None:
        holder["loop"] = asyncio.get_running_loop()
        for sid in SIDS[:6]:
            await s.put(sid, [body_of(sid)])
        await s.delete(SIDS[0])  # pack 1 two thirds live: two steps; pack 2 stays
        s.hook = hook
        await s.compact()
        s.hook = None
    try:
        asyncio.run(go())
        assert [flag for _, flag in seen] == [False] + [True] * (len(seen) - 1)
        assert len(seen) == 2 and read(s, late) == b"late" and s.compacted == 1
    finally:
        s.close()


CHILD = textwrap.dedent("""
    import asyncio, hashlib, os, signal, sys
    from nodes.packstore import PackStore

    SIDS = [f"{i:032x}.{i % 6}" for i in range(1, 13)]
    point, nth = sys.argv[2], int(sys.argv[3])
    hits = []

    def hook(at, seq):
        if at == point:
            hits.append(seq)
            if len(hits) == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    async def main() -> None:
        s = PackStore(sys.argv[1], seal_bytes=3 * 202)
        s.open()
        for sid in SIDS:
            await s.put(sid, [hashlib.shake_256(sid.encode()).digest(150)])
        for sid in SIDS[::3] + SIDS[1::3]:
            await s.delete(sid)
        print("filled", flush=True)
        s.hook = hook
        await s.compact()
        print("done", flush=True)
    asyncio.run(main())
""")


@pytest.mark.parametrize(("point", "nth"), [
    ("written", 1), ("written", 3), ("copied", 1), ("copied", 2), ("drop", 1), ("drop", 2),
    ("unlinked", 1), ("unlinked", 3)])
def test_kill_9_anywhere_in_a_compaction_recovers(tmp_path: Path, point: str, nth: int) -> None:
    """A node killed with SIGKILL in a compaction (a step's records written but not synced,
    synced but not indexed, a pack emptied but not unlinked, unlinked but its directory not
    synced): after the restart every live shard reads back and no deleted one returns."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), point, str(nth)],
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.split() == ["filled"]
    s = PackStore(tmp_path, seal_bytes=3 * 202)
    s.open()
    try:
        keep = SIDS[2::3]
        for sid in SIDS:
            want = hashlib.shake_256(sid.encode()).digest(150) if sid in keep else None
            assert read(s, sid) == want, sid
        asyncio.run(s.compact())  # and a compaction after the crash finishes the job
        s = reopen(s)
        assert all(read(s, sid) == hashlib.shake_256(sid.encode()).digest(150) for sid in keep)
        assert not [sid for sid in SIDS if sid not in keep and s.locate(sid) is not None]
        assert s.damage == []
    finally:
        s.close()
    assert os.listdir(tmp_path / "quarantine") == []  # no torn tail: pwritev had returned


def test_a_paced_compaction_waits_between_steps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At `pace` bytes/s a step of n bytes is followed by n/pace s before the next: a lower
    bound only (a slow box cannot fail it), which an unpaced committer breaks."""
    monkeypatch.setattr(packsteps, "STEP_BYTES", 1)  # one record a step
    s = PackStore(tmp_path, seal_bytes=3 * (150 + pf.OVERHEAD), compact_ratio=0.9)
    s.open()
    import time
    at: list[float] = []
    s.hook = lambda point, seq: at.append(time.monotonic()) if point == "copied" else None

    async def go() -> None:
        for sid in SIDS[:4]:
            await s.put(sid, [body_of(sid)])
        await s.delete(SIDS[0])  # pack 1: two live records, two steps of 202 B
        await s.compact(pace=202 / 0.3)
    try:
        asyncio.run(go())
    finally:
        s.close()
    assert len(at) == 2 and at[1] - at[0] >= 0.3
