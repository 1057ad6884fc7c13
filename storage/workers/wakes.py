"""Wake-ups on metadata changes, so idle loops need not poll a networked store often.

On etcd every idle poll is a linearizable read through Raft (about 2.5 ms of the members' CPU
and 1 ms of the gateway's each); a loop that polls a few times a second costs an idle cluster
more than its heartbeats. A `Wakes` keeps one etcd watch per key range (shared by every
waiter on it) and sets each waiter's event when a key in the range changes; the loop then
sleeps much longer between polls (`watched_pause`) and is woken at once by a change. On a
store without watches (SQLite, where a poll is a local read) nothing changes: `waiter`
returns None and the loop keeps its own pause.

A waiter clears its event *before* it reads (`Waiter.arm`), so a change made while it reads
wakes its next wait; each time etcd confirms a stream (at first, and after a stream broke
and was set up again elsewhere) every waiter is woken too, since a change may have come
before the stream; a broken stream also resumes after its last seen revision
(`EtcdStore.watch_prefix`). The long pause stays as a bound on anything missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from storage.waits import wait_event

log = logging.getLogger("tessera.workers")

WATCHED_PAUSE_S = 2.0  # the fallback poll of a loop a watch wakes


class Waiter:
    """One loop's view of a watched range: `arm()` before reading it, `wait(pause)` after."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.wakes = 0  # times a change woke it (tests count them)

    def arm(self) -> None:
        self._event.clear()

    def set(self) -> None:
        self._event.set()

    async def wait(self, pause_s: float) -> bool:
        """True if a change woke it before `pause_s` passed."""
        if not await wait_event(self._event, pause_s):
            return False
        self.wakes += 1
        return True


class Wakes:
    """Watches over one metadata store, created on demand and stopped together."""

    def __init__(self, meta: Any) -> None:
        self._watch = getattr(meta, "watch_prefix", None)
        self._waiters: dict[bytes, list[Waiter]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.watching: set[bytes] = set()  # prefixes a stream has been confirmed for

    def waiter(self, prefix: bytes, w: Waiter | None = None) -> Waiter | None:
        """A waiter woken by changes under `prefix` (None when the store cannot watch);
        `w`: an existing waiter, woken by this prefix too."""
        if self._watch is None:
            return None
        w = w or Waiter()
        if prefix not in self._waiters:
            self._waiters[prefix] = []
            self._tasks.append(asyncio.create_task(self._follow(prefix),
                                                   name=f"wake-{prefix!r}"))
        self._waiters[prefix].append(w)
        return w

    def drop(self, prefix: bytes, waiter: Waiter) -> None:
        """Forget a waiter whose loop ended (its watch stays for the next one)."""
        with contextlib.suppress(KeyError, ValueError):
            self._waiters[prefix].remove(waiter)

    def _wake(self, prefix: bytes) -> None:
        for w in self._waiters[prefix]:
            w.set()

    def _created(self, prefix: bytes) -> None:
        """A stream is (again) watching: wake everyone, as a change may have fallen between
        their last read and now."""
        self.watching.add(prefix)
        self._wake(prefix)

    async def _follow(self, prefix: bytes) -> None:
        assert self._watch is not None
        while True:
            try:
                async for _ in self._watch(prefix, 0, lambda: self._created(prefix)):
                    self._wake(prefix)  # a batch of changes, or [] after a gap
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the pause still bounds a missed wake-up
                log.warning("watch on %r failed; following it again", prefix, exc_info=True)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
