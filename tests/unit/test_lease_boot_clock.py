"""Leases are counted on the boot clock (storage/leaseclock.py, block21): a host suspended
and resumed has its CLOCK_MONOTONIC stopped for the suspend, so a holder counting on it
thought its lease as young as before the suspend while whoever took the lease over had
waited the TTL out. The suspend is injected: the boot clock jumps a TTL ahead while the
monotonic clock (and the event loop's) does not move."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from storage import leaseclock
from storage.leases import Leases
from storage.metadata import Txn
from storage.metadata.fence import LeaseFenced
from storage.metadata.sqlite import SqliteStore
from storage.volume_overlay import JournaledVolume
from storage.volume_records import Fenced
from storage.volumes import VolumeService
from storage.workers.stepfence import LeaseRanOut, StepFence
from tests.unit.test_volume_journal import SIZE, crash, with_service


class _BootClock:
    """The real boot clock plus every suspend so far (it never goes back)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real, self.suspended = leaseclock.now, 0.0
        monkeypatch.setattr(leaseclock, "now", lambda: self.real() + self.suspended)

    def resume_after(self, suspended_s: float) -> None:
        """The system was suspended `suspended_s`: only the boot clock counted it."""
        self.suspended += suspended_s


def test_a_mount_resumed_from_suspend_serves_nothing_from_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The mount daemon's journaled volume after a suspend past its lease: what it holds in
    memory is not served until a renewal says the lease is still its own; once another
    writer took the volume over, its reads and writes are Fenced."""
    clock = _BootClock(monkeypatch)

    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        old = JournaledVolume(await svc.open("t", "v", holder="old"))
        await old.write(0, b"a" * 4096)
        await old.flush()
        assert old.try_read(0, 4096) == b"a" * 4096
        clock.resume_after(old.vol.ttl)  # nobody took the volume meanwhile
        assert not old.vol.lease_valid()
        assert old.try_read(0, 4096) is None and old.try_write(4096, b"x" * 4096) is None
        assert await old.read(0, 4096) == b"a" * 4096  # renewed: still its own
        assert old.try_read(0, 4096) == b"a" * 4096
        await crash(svc, old)  # suspended again, and this time taken over
        new = JournaledVolume(await svc.open("t", "v", holder="new"))
        await new.write(0, b"b" * 4096)
        await new.flush()
        clock.resume_after(old.vol.ttl)
        assert old.try_read(0, 4096) is None and old.try_write(0, b"x" * 4096) is None
        with pytest.raises(Fenced):
            await old.read(0, 4096)
        assert await new.read(0, 4096) == b"b" * 4096
        await new.stop()
        await new.vol.close()

    with_service(body)


async def test_a_worker_step_resumed_from_suspend_commits_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A background worker's step under its lease: after a suspend past the TTL (its
    step's deadline, on the loop's clock, has not fired) its commits are not sent, and no
    further step starts."""
    meta = await SqliteStore.open(tmp_path / "meta.db")
    try:
        lease = await Leases(meta).acquire("w", "host/a:1/10", 60.0)  # (the jump is injected)
        assert lease is not None
        fence = StepFence(lease)
        async with fence.step():
            assert await meta.txn(Txn(puts={b"k": b"before"}))
            _BootClock(monkeypatch).resume_after(lease.ttl_s)
            assert not lease.valid()
            with pytest.raises(LeaseFenced, match="ran out"):
                await meta.txn(Txn(puts={b"k": b"after"}))
        with pytest.raises(LeaseRanOut):
            async with fence.step():
                pass
        item = await meta.get(b"k")
        assert item is not None and item.value == b"before"
    finally:
        await meta.close()


def test_a_renewal_that_fails_unexpectedly_with_nobody_waiting_is_logged(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """review21d: the shared renewal's done callback retrieved every outcome, so a bug in
    `renew` (not Fenced, not the store's StorageError) whose waiters were all cancelled (an
    unmount, FUSE interrupts) vanished without a word; before block21 asyncio logged it."""
    clock = _BootClock(monkeypatch)

    async def body(svc: VolumeService) -> None:
        await svc.create("t", "v", SIZE)
        h = await svc.open("t", "v", holder="h")
        clock.resume_after(h.ttl)  # lease_valid cannot tell: check_held renews
        started, go = asyncio.Event(), asyncio.Event()

        async def broken() -> None:
            started.set()
            await go.wait()
            raise RuntimeError("a bug in renew")
        h.renew = broken  # type: ignore[method-assign]
        waiter = asyncio.ensure_future(h.check_held())
        await started.wait()
        waiter.cancel()  # its only waiter goes
        await asyncio.wait([waiter])
        renewal = h._renewal
        assert renewal is not None
        go.set()
        await asyncio.wait([renewal])
        del h.renew  # type: ignore[method-assign]
        await h.close()

    with caplog.at_level(logging.ERROR, logger="tessera.volumes"):
        with_service(body)
    assert any("lease renewal failed" in r.getMessage() and r.exc_info
               and "a bug in renew" in str(r.exc_info[1]) for r in caplog.records), caplog.text


async def test_a_worker_step_resumed_from_suspend_is_cancelled_without_waiting_out_the_suspend(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """block22 (final-s21 low): the step's deadline timer runs on the loop's clock, which a
    suspend stops, so it fired as late as the suspend was long (here: the whole 60 s TTL
    after the resume). The deadline is re-read from the boot clock every CHECK_S: the step
    resumed past its lease's end is cancelled within a check."""
    monkeypatch.setattr(StepFence, "CHECK_S", 0.05, raising=False)
    meta = await SqliteStore.open(tmp_path / "meta.db")
    try:
        lease = await Leases(meta).acquire("w", "host/a:1/10", 60.0)
        assert lease is not None
        fence, running = StepFence(lease), asyncio.Event()

        async def step() -> None:
            async with fence.step():
                running.set()
                await asyncio.Event().wait()  # a step waiting on an answer

        task = asyncio.create_task(step())
        await running.wait()
        _BootClock(monkeypatch).resume_after(lease.ttl_s)
        async with asyncio.timeout(20):  # the loop-clock timer alone: 60 s
            with pytest.raises(LeaseRanOut):
                await task
    finally:
        await meta.close()
