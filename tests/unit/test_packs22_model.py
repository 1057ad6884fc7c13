"""packs22: a stateful test of one disk's packs against a model: puts, replaces, deletes,
hole punching, compaction, restarts and lost packs (any, the newest included). After every
restart the store reports exactly the packs lost; a shard no loss touched reads its newest
bytes (or is absent when deleted); a shard a loss may have touched reads one of the bodies
written to it, or is missing (repair rebuilds it), never bytes it never held (a punched
record's zeros)."""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from nodes import packformat as pf
from nodes.packstore import PackStore

BODY = 9000  # two whole 4 KiB blocks inside: punching has something to give back
SEAL = 3 * (BODY + pf.OVERHEAD)
IDS = [f"{i:032x}.{i % 6}" for i in range(1, 9)]


class PacksModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="packs22-model-"))
        self.store = self._open()
        self.latest: dict[str, bytes | None] = {}
        self.written: dict[str, set[bytes]] = {}
        self.touched: set[str] = set()  # ids a lost pack may have held a record of
        self.lost: set[int] = set()
        self.gen = 0

    def _open(self) -> PackStore:
        s = PackStore(self.root, seal_bytes=SEAL, compact_ratio=0.6, reserve_bytes=0)
        s.open()
        return s

    def _body(self, sid: str) -> bytes:
        self.gen += 1
        return random.Random(f"{sid}/{self.gen}").randbytes(BODY)

    @rule(sid=st.sampled_from(IDS))
    def put(self, sid: str) -> None:
        body = self._body(sid)
        asyncio.run(self.store.put(sid, [body], replace=True))
        self.latest[sid] = body
        self.written.setdefault(sid, set()).add(body)
        self.touched.discard(sid)  # its newest record is this one, in no lost pack

    @rule(sid=st.sampled_from(IDS))
    def delete(self, sid: str) -> None:
        asyncio.run(self.store.delete(sid))
        if self.latest.get(sid) is not None or sid in self.touched:
            self.latest[sid] = None
            self.touched.discard(sid)

    @rule()
    def punch(self) -> None:
        asyncio.run(self.store.punch(min_dead=0))

    @rule()
    def compact(self) -> None:
        asyncio.run(self.store.compact())

    @rule()
    def restart(self) -> None:
        self.store.close()
        self.store = self._open()

    @rule(pick=st.integers(0, 1 << 16), newest=st.booleans())
    def lose_a_pack(self, pick: int, newest: bool) -> None:
        self.store.close()
        packs = sorted(self.root.joinpath("packs").glob("*.pack"))
        if packs:
            gone = packs[-1] if newest else packs[pick % len(packs)]
            gone.unlink()
            self.lost.add(int(gone.stem, 16))
            self.touched |= set(IDS)
        self.store = self._open()

    @invariant()
    def reads_are_what_was_written(self) -> None:
        s = self.store
        assert set(s.missing) == self.lost
        for sid in IDS:
            loc = s.locate(sid)
            got = None if loc is None else s.read(loc)
            if sid in self.touched:
                assert got is None or got in self.written.get(sid, set()), (sid, loc)
            else:
                assert got == self.latest.get(sid), (sid, loc)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.root, ignore_errors=True)


PacksModel.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow])
test_packs_against_a_model = PacksModel.TestCase
