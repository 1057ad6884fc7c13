"""A stateful model test of the block volume API: write, fsync, fold, snapshot (of a live
writer, and of a crashed one), clone, resize, detach, attach and crash, against a model of
what must be durable.

Hypothesis drives a real volume service, journal and overlay over simulated nodes and SQLite
(tests/unit/test_volume_journal.py). The model: the bytes a live reader sees, the bytes at
the last barrier, and the writes since (a crash may keep any of those, nothing older). Every
snapshot must read exactly what it froze for ever after, a clone exactly its snapshot.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from storage.keyspace import kept_journal_prefix
from storage.keyspace import unpack as unpack_key
from storage.volume_overlay import JournaledVolume
from storage.volume_records import Fenced, scan_prefix
from tests.unit.test_replay_check import check_replay
from tests.unit.test_volume_journal import Sim, crash

MiB = 1 << 20
PAGE = 4096


class VolumeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        self.sim = Sim(Path(self.tmp.name))
        self.svc = self.run(self.sim.open())
        self.size = 3 * MiB
        self.run(self.svc.create("t", "v", self.size))
        self.model = bytearray(self.size)  # what a reader of the attached volume sees
        self.synced = bytearray(self.size)  # at the last barrier
        self.since: list[tuple[int, bytes]] = []  # writes after it
        self.jv: JournaledVolume | None = None
        self.zombie: JournaledVolume | None = None  # a crashed writer, paused not dead
        self.crashed = False
        self.snaps: dict[str, bytes] = {}
        self.snapshots_taken = 0
        self.cloned: set[str] = set()  # snapshots with a clone (not deleted then)
        self.clones = 0
        self.rnd = random.Random(0)

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            for name, want in self.snaps.items():  # every snapshot still reads what it froze
                got = self.read_snapshot(name)  # (grown with the volume: zeros past it)
                assert got[:len(want)] == want and not any(got[len(want):]), name
        finally:
            if self.jv is not None:
                self.run(self.jv.vol.close())
            self.run(self.sim.close())
            self.loop.close()
            self.tmp.cleanup()

    def read_snapshot(self, name: str) -> bytes:
        async def go() -> bytes:
            ro = await self.svc.open("t", "v", holder="ro", snapshot=name)
            return await ro.read(0, ro.vol.size)
        return self.run(go())

    def barrier(self) -> None:
        self.synced[:] = self.model
        self.since = []

    # the writer ----------------------------------------------------------------------------

    @initialize()
    def first_attach(self) -> None:
        self.attach()

    @precondition(lambda self: self.jv is None)
    @rule()
    def attach(self) -> None:
        h = self.run(self.svc.open("t", "v", holder=f"w{self.rnd.random()}"))
        got = self.run(h.read(0, h.vol.size))
        if self.crashed:  # the attach replayed what the crashed writer left
            check_replay(got, self.synced, self.since)
            self.model[:] = got
            self.barrier()
            self.crashed = False
        assert got == bytes(self.model)
        self.jv = JournaledVolume(h, max_dirty=1 * MiB)

    @precondition(lambda self: self.jv is not None)
    @rule(page=st.integers(0, 3 * MiB // PAGE - 1), n=st.sampled_from([1, 2, 40, 256]))
    def write(self, page: int, n: int) -> None:
        assert self.jv is not None
        off = page * PAGE
        data = self.rnd.randbytes(min(n * PAGE, self.size - off))
        if self.jv.npages >= self.jv.max_pages:  # the folder's job (not running here)
            self.run(self.jv._fold_many(list(self.jv.pages)))
        if self.jv.try_write(off, data) is None:
            self.run(self.jv.write(off, data))
        self.model[off:off + len(data)] = data
        self.since.append((off, data))

    @precondition(lambda self: self.jv is not None)
    @rule()
    def fsync(self) -> None:
        assert self.jv is not None
        self.run(self.jv.flush())
        self.barrier()

    @precondition(lambda self: self.jv is not None)
    @rule(extent=st.integers(0, 2))
    def fold(self, extent: int) -> None:
        assert self.jv is not None
        self.run(self.jv._fold_many([extent]))

    @precondition(lambda self: self.jv is not None)
    @rule(extent=st.integers(0, 2))
    def compact(self, extent: int) -> None:
        """Re-journal an extent's pages: older segments retire without a fold."""
        assert self.jv is not None
        self.run(self.jv._compact([extent]))

    @precondition(lambda self: self.jv is not None)
    @rule()
    def detach(self) -> None:
        assert self.jv is not None
        self.run(self.jv.stop())
        self.run(self.jv.vol.close())
        self.jv = None
        self.barrier()
        assert self.read_volume() == bytes(self.model)

    def read_volume(self) -> bytes:
        async def go() -> bytes:
            h = await self.svc.open("t", "v", holder="reader")
            try:
                return await h.read(0, h.vol.size)
            finally:
                await h.close()
        return self.run(go())

    @precondition(lambda self: self.jv is not None)
    @rule(page=st.none() | st.integers(0, 3 * MiB // PAGE - 1), then_snapshot=st.booleans())
    def kill(self, page: int | None, then_snapshot: bool) -> None:
        assert self.jv is not None
        if page is not None:  # a write, its fsync returned, then kill -9: it is journaled
            self.write(page, 1)
            self.fsync()
        self.run(crash(self.svc, self.jv))  # kill -9, or SIGSTOP past the lease
        self.zombie, self.jv, self.crashed = self.jv, None, True
        if then_snapshot and len(self.snaps) < 4:
            self.snapshot_after_crash()

    # snapshots, clones, resize ---------------------------------------------------------------

    @precondition(lambda self: self.jv is not None and len(self.snaps) < 4)
    @rule()
    def snapshot_live(self) -> None:
        assert self.jv is not None
        name = f"s{self.snapshots_taken}"
        self.snapshots_taken += 1
        self.run(self.jv.snapshot(name))  # the writer freezes with its journal (mount's path)
        self.barrier()
        self.snaps[name] = bytes(self.model)
        assert self.read_snapshot(name) == self.snaps[name]

    @precondition(lambda self: self.crashed and len(self.snaps) < 4)
    @rule()
    def snapshot_after_crash(self) -> None:
        name = f"s{self.snapshots_taken}"
        self.snapshots_taken += 1
        self.run(self.svc.snapshot("t", "v", name, flushed=[]))
        got = self.read_snapshot(name)
        check_replay(got, self.synced, self.since)  # every fsynced write is in it
        self.model[:] = got
        self.barrier()
        self.crashed = False
        self.snaps[name] = got
        assert self.read_volume() == got
        zombie, self.zombie = self.zombie, None
        lease = self.run(self.svc.lease(zombie.vol.vol.id)) if zombie else None
        if zombie is not None and lease is not None and lease["token"] > zombie.vol.token:
            # The snapshot attached to replay the journal: the paused writer resumes and
            # may not commit (with no journal to replay nobody took its lease over).
            if zombie.npages >= zombie.max_pages:  # full: its folder's turn (not running
                with pytest.raises(Fenced):  # here; a write would wait for it for ever)
                    self.run(zombie._fold_many(list(zombie.pages)))
            else:
                self.run(zombie.write(0, b"z" * PAGE))
                with pytest.raises(Fenced):
                    self.run(zombie.flush())

    @precondition(lambda self: self.snaps and self.clones < 2)
    @rule(data=st.data())
    def clone(self, data: st.DataObject) -> None:
        snap = data.draw(st.sampled_from(sorted(self.snaps)))
        self.cloned.add(snap)
        name = f"c{self.clones}"
        self.clones += 1
        self.run(self.svc.clone("t", "v", snap, name))

        async def go() -> None:
            c = await self.svc.open("t", name, holder="c")
            want = self.snaps[snap]
            got = await c.read(0, c.vol.size)  # the size of its origin now
            assert got[:len(want)] == want and not any(got[len(want):])
            await c.write(0, b"c" * PAGE)  # the clone diverges; nothing else may notice
            await c.close()
        self.run(go())

    @precondition(lambda self: set(self.snaps) - self.cloned)
    @rule(data=st.data())
    def delete_snapshot(self, data: st.DataObject) -> None:
        """Deleting a snapshot frees the journal segments only it held; the others still
        read what they froze (checked at teardown)."""
        snap = data.draw(st.sampled_from(sorted(set(self.snaps) - self.cloned)))
        self.run(self.svc.delete_snapshot("t", "v", snap))
        del self.snaps[snap]

        async def kept() -> list[int]:
            vol = await self.svc.get("t", "v")
            seqs = [int(unpack_key(i.key)[2])
                    async for i in scan_prefix(self.svc.meta, kept_journal_prefix(vol.id))]
            assert all(vol.holds_segment(q) for q in seqs), (seqs, vol.snapshots)
            return seqs
        if not self.snaps:
            assert self.run(kept()) == []
        else:
            self.run(kept())

    @precondition(lambda self: self.jv is None and not self.crashed and self.size < 5 * MiB)
    @rule()
    def resize(self) -> None:
        self.size += MiB
        self.run(self.svc.resize("t", "v", self.size))
        for buf in (self.model, self.synced):
            buf += bytes(MiB)


VolumeMachine.TestCase.settings = settings(
    max_examples=12, stateful_step_count=12, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_volume_api_against_a_model = VolumeMachine.TestCase
