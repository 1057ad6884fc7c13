"""The store-side fence of a leased worker's step: every transaction the step (or any task it
started) commits also compares the worker's lease, so the store refuses it once another
process holds that lease, whatever the stale holder's tasks still do.

A step's own cancellation (storage/workers/stepfence.py) stops the step's task at the lease's
end, but not a sub-task woken in the same loop iteration (repair_batch's rebuilds), nor a
request sent before a pause, nor a step whose `asyncio.wait_for` swallowed the cancellation.
Here the runner sets `FENCE` for the step; tasks the step creates copy it (contextvars), and
each store's `txn_or_read` adds the compare `{fence key: revision}`:

- etcd: the key is `(L, name)` at its mod revision (the lease's token): a keep-alive does not
  change it; it changes (or the key goes) only when the lease ends or changes hands;
- SQLite: renewals rewrite `(L, name)` (its expiry), so acquiring writes `(LF, name)` too, in
  the same transaction, and the fence compares that (storage/leases.py).

A fenced transaction whose fence no longer holds raises `LeaseFenced` (never a plain False:
a compare-and-swap retry loop would spin on it). Once the lease ran out locally (`valid()`
False) nothing is sent at all. Unconditional `put`/`delete` are not fenced (worker counters).
The fence holds only while the step runs (`Fence.active`): a task that outlives the step
commits unfenced. A task run in `outside_step()`'s context is not fenced at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextvars import Context, ContextVar, copy_context
from dataclasses import dataclass
from typing import Any, Protocol

from storage.metadata import Item, Txn


class _Lease(Protocol):
    name: str

    def valid(self, now: float | None = None) -> bool: ...


class LeaseFenced(Exception):
    """A worker's commit refused: its lease ran out here or is held elsewhere now."""


@dataclass
class Fence:
    """The lease a step runs under, as its transactions compare it."""

    lease: _Lease
    key: bytes  # b"": no store-side compare (a lease without one), only the local check
    revision: int
    active: bool = True  # False once the step ended (a lingering task it started is not fenced)


FENCE: ContextVar[Fence | None] = ContextVar("tessera_step_fence", default=None)


def outside_step() -> Context:
    """A copy of the current context outside any step: for a task a step starts on behalf of
    the whole process (a finding every reader shares), whose commits are not the step's."""
    ctx = copy_context()
    ctx.run(FENCE.set, None)
    return ctx


_CLEANUPS: set[asyncio.Task[Any]] = set()  # running cleanups (the loop keeps weak references)


async def cleanup_outside_step(coro: Coroutine[Any, Any, Any]) -> None:
    """Run a cleanup (`coro`) as a task outside any step's fence, shielded: a cancellation of
    the caller (a shutdown, a nested timeout, a second cancel while the first one's cleanup
    runs) ends the caller's wait, not the cleanup, which would otherwise stop half way."""
    task = asyncio.create_task(coro, context=outside_step())
    _CLEANUPS.add(task)
    task.add_done_callback(_CLEANUPS.discard)
    await asyncio.shield(task)


def fenced(txn: Txn, reads: tuple[bytes, ...]) -> tuple[Txn, tuple[bytes, ...], Fence | None]:
    """`txn` and `reads` with the current step's fence added (unchanged outside a step)."""
    f = FENCE.get()
    if f is None or not f.active:
        return txn, reads, None
    if not f.lease.valid():
        raise LeaseFenced("its lease ran out: commit not sent")
    if not f.key:
        return txn, reads, f
    extra = () if f.key in reads else (f.key,)
    return Txn({**txn.compares, f.key: f.revision}, txn.puts, txn.deletes), reads + extra, f


def check(f: Fence | None, done: bool, seen: dict[bytes, Item | None],
          reads: tuple[bytes, ...]) -> tuple[bool, dict[bytes, Item | None]]:
    """The caller's answer to a fenced `txn_or_read`; LeaseFenced if the fence failed it."""
    if f is None or not f.key or done:
        return done, seen
    item = seen.get(f.key)
    if (item.revision if item is not None else 0) != f.revision:
        raise LeaseFenced("its lease is held elsewhere: commit refused")
    if f.key not in reads:
        seen = {k: v for k, v in seen.items() if k != f.key}
    return done, seen
