"""A disk's packs (nodes.packstore): group commit, durable before acknowledged, the index
rebuilt by a restart, kill -9 in mid-append, and a stateful model of
puts, replaces, deletes and restarts against a dict."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from nodes import packformat as pf
from nodes import packsteps, packstore
from nodes.packrecovery import pack_name
from nodes.packstore import PackStore
from nodes.shardfile import UNCHANGED, ShardExists

SIDS = [f"{i:032x}.{i % 6}" for i in range(1, 7)]


def body_of(sid: str, size: int = 300) -> bytes:
    return hashlib.shake_256(sid.encode()).digest(size)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PackStore]:
    s = PackStore(tmp_path, reserve_bytes=1 << 18)
    s.open()
    yield s
    s.close()


def reopen(s: PackStore, seal_bytes: int | None = None) -> PackStore:
    s.close()
    n = PackStore(s.root, s.seal_bytes if seal_bytes is None else seal_bytes, s.compact_ratio,
                  reserve_bytes=s.reserve.size)
    n.open()
    return n


def read(s: PackStore, sid: str) -> bytes | None:
    loc = s.locate(sid)
    return None if loc is None else s.read(loc)


async def held_group(s: PackStore, coros: list) -> list:
    """Run `coros` so that all of them are queued before the committer takes any: one
    group. The condition's lock is re-entrant: this thread queues while holding it."""
    with s._cond:
        tasks = [asyncio.ensure_future(c) for c in coros]
        while len(s._pending) < len(coros):
            await asyncio.sleep(0)  # a yield to the tasks, not a wait for time
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_put_read_restart(store: PackStore) -> None:
    async def go() -> None:
        assert await store.put(SIDS[0], [body_of(SIDS[0])]) == -1
        assert await store.put(SIDS[1], [b"ab", memoryview(b"cd")]) == -1
    asyncio.run(go())
    assert read(store, SIDS[0]) == body_of(SIDS[0])
    assert store.read(store.locate(SIDS[1]), 1, 2) == b"bc"
    again = reopen(store)
    try:
        assert read(again, SIDS[0]) == body_of(SIDS[0]) and read(again, SIDS[1]) == b"abcd"
        assert again.damage == []
    finally:
        again.close()
        store.close()  # idempotent: the fixture closes it again


def test_one_group_one_fdatasync(store: PackStore) -> None:
    """Requests queued together are written by one pwritev and made durable by one
    fdatasync, and each caller is answered."""
    before = store.syncs
    got = asyncio.run(held_group(store, [store.put(s, [body_of(s)]) for s in SIDS]))
    assert got == [-1] * len(SIDS)
    assert store.syncs == before + 1
    assert all(read(store, s) == body_of(s) for s in SIDS)


def test_a_caller_cancelled_before_its_group_is_left_out(store: PackStore) -> None:
    """A request whose caller gave up (a dropped client) before the committer took it is
    not written; the rest of its group is written and answered as if it were not there."""
    async def go() -> list:
        with store._cond:
            tasks = [asyncio.ensure_future(store.put(s, [body_of(s)])) for s in SIDS[:3]]
            while len(store._pending) < 3:
                await asyncio.sleep(0)  # a yield to the tasks, not a wait for time
            tasks[1].cancel()
            await asyncio.sleep(0)
        return await asyncio.gather(*tasks, return_exceptions=True)
    got = asyncio.run(go())
    assert got[0] == got[2] == -1 and isinstance(got[1], asyncio.CancelledError)
    assert store.locate(SIDS[1]) is None
    assert read(store, SIDS[0]) == body_of(SIDS[0]) and read(store, SIDS[2]) == body_of(SIDS[2])
    again = reopen(store)
    try:
        assert again.locate(SIDS[1]) is None
    finally:
        again.close()


def test_same_id_in_one_group(store: PackStore) -> None:
    """Within a group, requests act in order: a same-bytes PUT is UNCHANGED, other bytes
    are ShardExists unless replace, a delete then a PUT makes it new again."""
    sid = SIDS[0]
    got = asyncio.run(held_group(store, [
        store.put(sid, [b"one"]), store.put(sid, [b"one"]), store.put(sid, [b"two"]),
        store.put(sid, [b"three!"], replace=True), store.delete(sid), store.delete(sid),
        store.put(sid, [b"four"])]))
    assert got[:2] == [-1, UNCHANGED] and isinstance(got[2], ShardExists)
    assert got[3:] == [3, True, False, -1]
    assert read(store, sid) == b"four"
    again = reopen(store)
    try:
        assert read(again, sid) == b"four"
    finally:
        again.close()


def test_exists_against_the_index(store: PackStore) -> None:
    sid = SIDS[0]

    async def go() -> list:
        out = [await store.put(sid, [b"abc"]), await store.put(sid, [b"abc"])]
        for body in ([b"abd"], [b"abcd"]):
            with pytest.raises(ShardExists):
                await store.put(sid, body)
        out.append(await store.put(sid, [b"xy"], replace=True))
        out += [await store.delete(sid), await store.delete(sid)]
        return out
    assert asyncio.run(go()) == [-1, UNCHANGED, 3, True, False]
    assert store.locate(sid) is None


def test_failed_sync_is_not_acknowledged(store: PackStore,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A group whose fdatasync fails is answered with the error, left out of the index and
    cut off the pack: after a restart the shard is not there, the next group is."""
    real = os.fdatasync
    calls = []

    def once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "planted")
        real(fd)
    monkeypatch.setattr(packstore.os, "fdatasync", once)
    size = store.sizes[store._active]

    async def go() -> None:
        with pytest.raises(OSError):
            await store.put(SIDS[0], [b"lost"])
        assert store.locate(SIDS[0]) is None
        assert os.fstat(store._fd(store._active)).st_size == size
        assert await store.put(SIDS[1], [b"kept"]) == -1
    asyncio.run(go())
    monkeypatch.undo()
    again = reopen(store)
    try:
        assert again.locate(SIDS[0]) is None and read(again, SIDS[1]) == b"kept"
        assert again.damage == []
    finally:
        again.close()


def test_packs_seal_and_a_later_tombstone_wins(tmp_path: Path) -> None:
    s = PackStore(tmp_path, seal_bytes=200)
    s.open()

    async def go() -> None:
        for sid in SIDS:
            await s.put(sid, [body_of(sid, 150)])
        await s.delete(SIDS[0])
        await s.put(SIDS[1], [b"new"], replace=True)
    asyncio.run(go())
    assert len(list(s.pack_dir.glob("*.pack"))) > 3
    again = reopen(s)
    try:
        assert again.locate(SIDS[0]) is None and read(again, SIDS[1]) == b"new"
        assert all(read(again, sid) == body_of(sid, 150) for sid in SIDS[2:])
        assert again.live[again.index[SIDS[2]].seq] == 150 + pf.OVERHEAD
        assert again.live[1] == 0  # its only record was deleted
    finally:
        again.close()


CHILD = textwrap.dedent("""
    import asyncio, hashlib, sys
    from nodes.packstore import PackStore

    async def main() -> None:
        s = PackStore(sys.argv[1], seal_bytes=64 * 1024)
        s.open()
        n = 0
        while True:
            sids = [f"{n + i:032x}.{(n + i) % 6}" for i in range(8)]
            n += 8
            async def one(sid):
                size = 1000 + int(sid[:32], 16) % 3000
                await s.put(sid, [hashlib.shake_256(sid.encode()).digest(size)])
                sys.stdout.write(sid + "\\n")
                sys.stdout.flush()
            await asyncio.gather(*(one(sid) for sid in sids))
    asyncio.run(main())
""")


def test_kill_9_in_mid_append_loses_no_acknowledged_shard(tmp_path: Path) -> None:
    """A writer killed with SIGKILL while appending: every shard it acknowledged reads back
    whole after the restart's scan."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    acked: list[str] = []
    try:
        assert proc.stdout is not None
        while len(acked) < 400:
            line = proc.stdout.readline()
            assert line, "the writer died"
            acked.append(line.strip())
        proc.send_signal(signal.SIGKILL)
        acked += [x.strip() for x in proc.stdout.read().splitlines() if x.strip()]
    finally:
        proc.kill()
        proc.wait()
    s = PackStore(tmp_path, seal_bytes=64 * 1024)
    s.open()
    try:
        for sid in acked:
            size = 1000 + int(sid[:32], 16) % 3000
            assert read(s, sid) == hashlib.shake_256(sid.encode()).digest(size), sid
    finally:
        s.close()


class PackModel(RuleBasedStateMachine):
    """Puts, replaces, deletes (alone or queued as one group), restarts, compactions and
    crashes in a compaction against a dict."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name) / "root"
        self.store = PackStore(self.root, seal_bytes=400, compact_ratio=0.3)
        self.store.open()
        self.model: dict[str, bytes] = {}
        self._step = packsteps.STEP_BYTES
        packsteps.STEP_BYTES = 200  # steps of one or two records: several per compaction

    def _expect(self, op: tuple[str, str, bytes, bool]) -> object:
        kind, sid, body, replace = op
        old = self.model.get(sid)
        if kind == "del":
            if old is None:
                return False
            del self.model[sid]
            return True
        if old is None:
            self.model[sid] = body
            return -1
        if replace:
            self.model[sid] = body
            return len(old)
        return UNCHANGED if old == body else ShardExists

    def _coro(self, op: tuple[str, str, bytes, bool]):  # noqa: ANN202
        kind, sid, body, replace = op
        if kind == "del":
            return self.store.delete(sid)
        return self.store.put(sid, [body], replace=replace)

    ops = st.tuples(st.sampled_from(["put", "put", "del"]), st.sampled_from(SIDS),
                    st.sampled_from([b"", b"a", b"bb", b"x" * 150]), st.booleans())

    @rule(op=ops)
    def alone(self, op: tuple[str, str, bytes, bool]) -> None:
        want = self._expect(op)
        try:
            got = asyncio.run(self._coro(op))
        except ShardExists as exc:
            got = type(exc)
        assert got == want

    @rule(group=st.lists(ops, min_size=2, max_size=6))
    def grouped(self, group: list[tuple[str, str, bytes, bool]]) -> None:
        want = [self._expect(op) for op in group]
        got = asyncio.run(held_group(self.store, [self._coro(op) for op in group]))
        assert [type(g) if isinstance(g, ShardExists) else g for g in got] == want

    @rule()
    def restart(self) -> None:
        self.store = reopen(self.store)
        assert self.store.damage == []

    @rule()
    def compact(self) -> None:
        due = self.store.candidates()
        asyncio.run(self.store.compact())
        assert not set(due) & set(self.store.sizes)  # each pack due went

    @rule(point=st.sampled_from(["written", "copied", "drop", "unlinked"]),
          nth=st.integers(1, 3), cut=st.floats(0, 1))
    def crash_in_compaction(self, point: str, nth: int, cut: float) -> None:
        """The disk as a kill -9 at the nth `point` of a compaction leaves it (at `written`,
        the step's records cut anywhere: torn), then a restart on it: the same shards."""
        snap = Path(self._tmp.name) / "crash"
        hits: list[int] = []

        def hook(at: str, seq: int) -> None:
            if at != point or snap.exists():
                return
            hits.append(seq)
            if len(hits) < nth:
                return
            shutil.copytree(self.root, snap)  # the committer, the only writer, waits here
            if at == "written":
                name = pack_name(seq)
                start, end = self.store.sizes[seq], os.path.getsize(self.store.path_of(seq))
                os.truncate(snap / "packs" / name, start + int((end - start) * cut))
        self.store.hook = hook
        asyncio.run(self.store.compact())
        self.store.close()
        if snap.exists():
            shutil.rmtree(self.root)
            snap.rename(self.root)
        self.store = PackStore(self.root, seal_bytes=400, compact_ratio=0.3)
        self.store.open()
        assert all(harm.torn and not harm.gaps and not harm.bad
                   for harm in self.store.damage)

    @invariant()
    def matches(self) -> None:
        assert set(self.store.index) == set(self.model)
        for sid, body in self.model.items():
            assert read(self.store, sid) == body
        live: dict[int, int] = {}
        for loc in self.store.index.values():
            live[loc.seq] = live.get(loc.seq, 0) + loc.length + pf.OVERHEAD
        assert {k: v for k, v in self.store.live.items() if v} == live

    def teardown(self) -> None:
        packsteps.STEP_BYTES = self._step
        self.store.close()
        self._tmp.cleanup()


# Each step fdatasyncs: 40 runs of 20 steps keep it to seconds on a loaded box.
TestPackModel = PackModel.TestCase
TestPackModel.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)


def test_the_same_put_twice_in_a_failed_group_is_not_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two PUTs of one shard with the same bytes in one group (a resent request): the second
    was answered UNCHANGED at once, as if the first were stored, also when the group's write
    then failed: a shard acknowledged with nothing on disk."""
    s = PackStore(tmp_path, reserve_bytes=1 << 18)
    s.open()
    real = packstore.writev_all
    fails = [1]

    def failing(fd: int, parts: list[bytes | memoryview], offset: int) -> None:
        if fails[0]:
            fails[0] -= 1
            raise OSError(errno.EIO, "write failed")
        real(fd, parts, offset)
    monkeypatch.setattr(packstore, "writev_all", failing)
    try:
        sid = SIDS[0]
        with s._cond:  # both queued before the committer takes either: one group
            first = s._enqueue(pf.PUT, sid, [b"body"], False, None)
            again = s._enqueue(pf.PUT, sid, [b"body"], False, None)
        for fut in (first, again):
            with pytest.raises(OSError):
                fut.result(timeout=30)
        assert s.locate(sid) is None
        with s._cond:  # and when the write succeeds, both are answered as before
            first = s._enqueue(pf.PUT, sid, [b"body"], False, None)
            again = s._enqueue(pf.PUT, sid, [b"body"], False, None)
        assert (first.result(timeout=30), again.result(timeout=30)) == (-1, UNCHANGED)
    finally:
        s.close()


async def test_a_smaller_reserve_setting_gives_the_rest_back_at_open(tmp_path: Path) -> None:
    """A reserve left from a life with a larger `[packs] reserve_bytes` (or the 8 MiB of
    before) is cut to the new size at open, to nothing at 0: posix_fallocate only grows."""
    path = tmp_path / "packs" / "reserve"
    for size, want in ((1 << 20, 1 << 20), (1 << 18, 1 << 18), (0, 0)):
        s = PackStore(tmp_path, reserve_bytes=size)
        s.open()
        try:
            assert path.stat().st_size == want
            assert path.stat().st_blocks * 512 <= max(want, 4096) + 4096
        finally:
            await asyncio.to_thread(s.close)
