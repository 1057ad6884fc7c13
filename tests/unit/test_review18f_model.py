"""Review 18f: the PackStore model with client ops queued *between* compaction steps (the
committer takes them as a group before its next step), then restarts: the same shards."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from nodes import packformat as pf
from nodes import packsteps
from nodes.packstore import PackStore, _Request
from nodes.shardfile import UNCHANGED, ShardExists

SIDS = [f"{i:032x}.{i % 6}" for i in range(1, 7)]
ops = st.tuples(st.sampled_from(["put", "put", "del"]), st.sampled_from(SIDS),
                st.sampled_from([b"a", b"bb", b"x" * 150, b"y" * 90]), st.booleans())


class BetweenSteps(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        import tempfile
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name) / "root"
        self.store = PackStore(self.root, seal_bytes=400, compact_ratio=0.6)
        self.store.open()
        self.model: dict[str, bytes] = {}
        self._step = packsteps.STEP_BYTES
        packsteps.STEP_BYTES = 150

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

    @rule(op=ops)
    def alone(self, op: tuple[str, str, bytes, bool]) -> None:
        kind, sid, body, replace = op
        want = self._expect(op)
        try:
            got = asyncio.run(self.store.delete(sid) if kind == "del"
                              else self.store.put(sid, [body], replace=replace))
        except ShardExists:
            got = ShardExists
        assert got == want

    @rule(point=st.sampled_from(["copied", "drop", "unlinked"]), nth=st.integers(1, 4),
          group=st.lists(ops, min_size=1, max_size=5))
    def compact_with_ops(self, point: str, nth: int, group: list) -> None:
        hits: list[int] = []
        futs: list[tuple[tuple, concurrent.futures.Future]] = []

        def hook(at: str, seq: int) -> None:
            if at != point:
                return
            hits.append(seq)
            if len(hits) != nth:
                return
            with self.store._cond:
                for op in group:
                    kind, sid, body, replace = op
                    fut: concurrent.futures.Future = concurrent.futures.Future()
                    parts = [] if kind == "del" else [body]
                    self.store._pending.append(_Request(
                        pf.TOMBSTONE if kind == "del" else pf.PUT, sid, parts, replace, fut,
                        sum(map(len, parts))))
                    futs.append((op, fut))
        self.store.hook = hook
        asyncio.run(self.store.compact())
        self.store.hook = None
        if not futs:  # the point was not reached: run them now
            for op in group:
                self.alone(op)
            return
        for op, fut in futs:
            want = self._expect(op)
            try:
                got = fut.result(30)
                if op[0] == "del":
                    got = got >= 0
            except ShardExists:
                got = ShardExists
            assert got == want, (op, got, want)

    @rule()
    def restart(self) -> None:
        self.store.close()
        self.store = PackStore(self.root, seal_bytes=400, compact_ratio=0.6)
        self.store.open()
        assert self.store.damage == []

    @invariant()
    def matches(self) -> None:
        assert set(self.store.index) == set(self.model)
        for sid, body in self.model.items():
            loc = self.store.locate(sid)
            assert loc is not None and self.store.read(loc) == body

    def teardown(self) -> None:
        packsteps.STEP_BYTES = self._step
        self.store.close()
        self._tmp.cleanup()


TestBetweenSteps = BetweenSteps.TestCase
TestBetweenSteps.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)
