"""Runs workers: each `step()` in a loop, pausing when idle, logging failures.

With `leases` set, each worker runs only while this process holds the worker's lease
(`storage/leases.py`, `(L, worker name)`): the runner takes it, renews it every third of its
TTL, and stops the worker's loop as soon as the lease is lost or cannot be renewed for a whole
TTL; another gateway sharing the metadata then takes it over once it expires. Each step runs
within the lease (`storage/workers/stepfence.py`): a process paused past the TTL does not go on
with its step when it resumes, and the store refuses the step's commits (and its sub-tasks')
once another process holds the lease (`storage/metadata/fence.py`).

A worker with a `wake_prefix` (key prefix whose changes give it work) is, on a store that
watches (etcd), woken by those changes and otherwise polls only every `watched_idle_s`
(`storage/workers/wakes.py`): idle polls are Raft reads there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from storage import leaseclock
from storage.activity import CLIENTS
from storage.config import WorkerSettings
from storage.errors import StorageFull
from storage.leases import Lease, Leases
from storage.metadata.fence import LeaseFenced
from storage.testing.archive_holds import install_from_env
from storage.workers import Worker, WorkerState
from storage.workers.stepfence import LeaseRanOut, StepFence
from storage.workers.wakes import WATCHED_PAUSE_S, Waiter, Wakes

if TYPE_CHECKING:
    from storage.cluster import Cluster
    from storage.workers.accesslog import MayDeliver

log = logging.getLogger("tessera.workers")
# a worker's steps on a full disk: paused twice as long each time (from its idle pause), up
# to the max, and logged in one line each, until one goes through
FULL_PAUSE_MIN_S, FULL_PAUSE_MAX_S = 0.01, 60.0
DEFAULT_LEASE_TTL_S = WorkerSettings.lease_ttl_s


@dataclass
class WorkerRunner:
    idle_s: float = 1.0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    leases: Leases | None = None  # None: run every worker unconditionally
    holder: str = ""
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S
    held: dict[str, Lease] = field(default_factory=dict)  # worker name -> lease we hold
    wakes: Wakes | None = None  # watches that wake idle workers (None: plain polling)

    def start(self, worker: Worker) -> None:
        body = self._loop(worker) if self.leases is None else self._leased(worker)
        self.tasks.append(asyncio.create_task(body, name=f"worker-{worker.name}"))

    async def _leased(self, worker: Worker) -> None:
        """Run `worker` whenever its lease is ours; wait for it otherwise."""
        assert self.leases is not None
        while True:
            try:
                lease = await self.leases.acquire(worker.name, self.holder, self.lease_ttl_s,
                                                  succeeds=self.holder.rsplit("/", 1)[0] + "/")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - metadata unreachable: try again later
                log.warning("worker %s: cannot take its lease: %s", worker.name, exc)
                lease = None
            if lease is None:
                await asyncio.sleep(self.lease_ttl_s / 3)
                continue
            log.info("worker %s: lease taken by %s (token %d)", worker.name, self.holder,
                     lease.token)
            self.held[worker.name] = lease
            fence = StepFence(lease)
            loop = asyncio.create_task(self._loop(worker, fence),
                                       name=f"worker-{worker.name}-loop")
            try:
                await self._hold(fence, loop)
            finally:
                self.held.pop(worker.name, None)
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(self.leases.release(lease), 2.0)

    async def _hold(self, fence: StepFence, loop: asyncio.Task[None]) -> None:
        """Renew the lease until it is lost (or stays unrenewed for a TTL) or the worker's
        loop ends (its step outlived the lease); then return."""
        assert self.leases is not None
        lease = fence.lease
        while lease.valid() and not loop.done():
            left = lease.ttl_s - (leaseclock.now() - lease.renewed_at)
            await asyncio.sleep(max(0.05, min(lease.ttl_s / 3, left - 0.05)))
            left = lease.ttl_s - (leaseclock.now() - lease.renewed_at)
            try:  # a renewal still hanging when the TTL runs out counts as lost
                if not await asyncio.wait_for(self.leases.renew(lease), max(0.05, left)):
                    log.warning("worker %s: lease lost; stopping it here", lease.name)
                    return
                fence.renewed()
            except asyncio.CancelledError:
                raise
            except TimeoutError:  # str() of it is empty: the log said "cannot renew: " alone
                log.warning("worker %s: cannot renew its lease: the metadata store did not "
                            "answer within %.1fs", lease.name, max(0.05, left))
            except Exception as exc:  # noqa: BLE001 - keep trying until the TTL runs out
                log.warning("worker %s: cannot renew its lease: %s", lease.name,
                            str(exc) or type(exc).__name__)
        if not lease.valid():
            log.warning("worker %s: lease not renewed for %.1fs; stopping it here",
                        lease.name, lease.ttl_s)

    async def _loop(self, worker: Worker, fence: StepFence | None = None) -> None:
        prefix = getattr(worker, "wake_prefix", None)
        prefixes = getattr(worker, "wake_prefixes", (prefix,) if prefix is not None else ())
        waiter = None
        if prefixes and self.wakes is not None:  # one waiter, woken by any of its prefixes
            waiter = self.wakes.waiter(prefixes[0])
            for p in prefixes[1:]:
                self.wakes.waiter(p, waiter)
            if waiter is not None and hasattr(worker, "watched"):
                setattr(worker, "watched", True)  # noqa: B010 - it may then check less often
        try:
            await self._steps(worker, waiter, fence)
        finally:
            if waiter is not None and self.wakes is not None:
                for p in prefixes:
                    self.wakes.drop(p, waiter)

    async def _steps(self, worker: Worker, waiter: Waiter | None,
                     fence: StepFence | None) -> None:
        idle_s = getattr(worker, "idle_s", self.idle_s)  # per-worker pause
        floor = getattr(worker, "min_pause_s", 0.0)  # watched: the least time between wakes
        full_pause = 0.0
        while True:
            if waiter is not None:
                waiter.arm()  # a change made during the step wakes the next pause
            try:
                if fence is None:
                    state = await worker.step()
                else:  # within the lease (a paused or starved process's lease ran out)
                    async with fence.step():
                        state = await worker.step()
                full_pause = 0.0
            except asyncio.CancelledError:
                raise
            except LeaseRanOut:
                log.warning("worker %s: its lease ran out; stopping it here", worker.name)
                return
            except LeaseFenced as exc:  # the store refused a commit: another holds the lease
                log.warning("worker %s: %s; stopping it here", worker.name, exc)
                return
            except StorageFull as exc:  # no fault of the worker: no traceback, no busy loop
                full_pause = min(FULL_PAUSE_MAX_S, max(idle_s, FULL_PAUSE_MIN_S, full_pause * 2))
                log.warning("worker %s paused for %.2f s: %s", worker.name, full_pause, exc)
                await asyncio.sleep(full_pause)
                continue
            except Exception:  # noqa: BLE001 - a worker must survive its own failures
                log.exception("worker %s failed a step", worker.name)
                state = WorkerState.IDLE
            if state is WorkerState.IDLE:
                if waiter is not None:  # (read each time: it may follow the worker's queue)
                    pause = max(idle_s, getattr(worker, "watched_idle_s", WATCHED_PAUSE_S))
                    if floor:  # a burst of changes wakes it once per `floor`, not per change
                        await asyncio.sleep(floor)
                    woken = getattr(worker, "woken", None)  # told (it may cache a record)
                    if await waiter.wait(max(0.0, pause - floor)) and woken is not None:
                        woken()
                else:
                    await asyncio.sleep(idle_s)
            else:
                await asyncio.sleep(0)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.wakes is not None:
            await self.wakes.stop()


def start_workers(cluster: Cluster, may_deliver: MayDeliver | None = None) -> WorkerRunner:
    """Run every worker the cluster builds (`Cluster.workers`), each under its lease."""
    runner = WorkerRunner(leases=Leases(cluster.meta), holder=gateway_holder(cluster),
                          lease_ttl_s=cluster.cfg.workers.lease_ttl_s, wakes=Wakes(cluster.meta))
    install_from_env(cluster.archive, gateway=True)  # a test hook, off unless asked for
    for worker in cluster.workers(clients_busy=CLIENTS.busy, may_deliver=may_deliver):
        runner.start(worker)
    return runner


def gateway_holder(cluster: Cluster) -> str:
    """This gateway's name in lease records: host, S3 listen address and pid.

    A restarted gateway (same host and address, new pid) takes its predecessor's leases at
    once: no two live processes can listen on one address.
    """
    return f"{socket.gethostname()}/{cluster.cfg.gateway.listen}/{os.getpid()}"

