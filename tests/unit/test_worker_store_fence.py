"""A leased worker's commits are refused by the store once another process holds its lease
(storage/metadata/fence.py), whatever the stale holder's tasks still do:

- a step's sub-task driven by `asyncio.wait` (repair_batch's rebuilds), which cancelling the
  step's own task does not reach in time (review19a, finding 2): the lease is taken over
  while the old holder still counts it valid, then the sub-task commits;
- a step whose `asyncio.wait_for` swallowed the step fence's cancellation (Python 3.11): it
  goes on past its lease's end and commits, with nobody else holding the lease yet.

Real runner, real `Leases` and a real SQLite store; the stall is the one of
tests/unit/test_worker_step_fence.py (the event loop blocked past the TTL).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage.leases import Leases
from storage.metadata import MetadataStore, Txn, open_store
from storage.workers import WorkerState
from storage.workers.runner import WorkerRunner
from tests.unit.test_worker_step_fence import _run_stalled, _Worker

KEY = b"fence-probe"


class _SubTaskCommits:
    """repair_batch's shape: the step's work runs in a task it watches with asyncio.wait and
    cancels in a finally; the task waits for `go`, then commits."""

    name = "fenced"

    def __init__(self, meta: MetadataStore) -> None:
        self.meta = meta
        self.in_step = asyncio.Event()
        self.go = asyncio.Event()
        self.outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def step(self) -> WorkerState:
        if self.outcome.done():
            return WorkerState.IDLE
        self.in_step.set()

        async def fix() -> None:
            await self.go.wait()
            try:
                ok = await self.meta.txn(Txn(compares={KEY: 0}, puts={KEY: b"stale"}))
                self.outcome.set_result("applied" if ok else "lost")
            except Exception as exc:
                self.outcome.set_result(type(exc).__name__)
                raise

        running = {asyncio.ensure_future(fix())}
        try:
            while running:
                _, running = await asyncio.wait(running, timeout=60)
        finally:
            for t in running:
                t.cancel()
        return WorkerState.IDLE


async def test_a_sub_task_of_a_stale_holders_step_cannot_commit(tmp_path: Path) -> None:
    meta = await open_store("sqlite", str(tmp_path / "meta.db"))
    runner = WorkerRunner(idle_s=0.01, leases=Leases(meta), holder="host/a:1/10",
                          lease_ttl_s=60)
    worker = _SubTaskCommits(meta)
    runner.start(worker)  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(worker.in_step.wait(), 60)
        # the same gateway restarted elsewhere (or any holder after expiry) takes it over;
        # the old holder renewed recently: its own clock says the lease is still valid
        taken = await Leases(meta).acquire("fenced", "host/a:1/11", 60, succeeds="host/a:1/")
        assert taken is not None and runner.held["fenced"].valid()
        worker.go.set()
        outcome = await asyncio.wait_for(worker.outcome, 60)
        assert await meta.get(KEY) is None, outcome  # on main: 'applied'
    finally:
        await runner.stop()
        await meta.close()


class _WaitForCommits(_Worker):
    """Waits for the answer through asyncio.wait_for, which on 3.11 returns the answer when
    it came in together with the step fence's cancellation, then commits."""

    def __init__(self, meta: MetadataStore) -> None:
        super().__init__(waits=True)
        self.meta = meta

    async def step(self) -> WorkerState:
        self.started += 1
        self.in_step.set()
        await asyncio.wait_for(self.answer.wait(), 60)
        await self.meta.txn(Txn(puts={KEY: b"past its lease"}))
        self.done += 1
        return WorkerState.IDLE


async def test_a_step_that_swallowed_its_cancellation_commits_nothing(tmp_path: Path) -> None:
    meta = await open_store("sqlite", str(tmp_path / "meta.db"))
    try:
        worker = _WaitForCommits(meta)
        started_after, done = await _run_stalled(worker)
        assert await meta.get(KEY) is None  # on main: committed after the lease ran out
        assert (done, started_after) == (0, 0)
    finally:
        await meta.close()
