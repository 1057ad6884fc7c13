"""The auth change stamp of the etcd store, kept current by a watch instead of a read per
request.

Every write of a tenant or access-key record puts AUTH_CHANGE in its own transaction
(`EtcdStore.txn_or_read`, `put`, `delete`), so that key's mod_revision changes with each. A
gateway checks the stamp on every authenticated request; reading it from etcd each time
(measured: a 4 KiB PUT at concurrency 1 went from 1 to 2 etcd requests and from ~2.8-3.4
to ~4.2 ms of server CPU, most of it the members' ReadIndex) costs too much, so each
process watches the key and answers from memory while its watch stream stands.

A watch alone can be silently stale: a member that hangs (or is cut off from its cluster,
etcd-io/etcd#7593, #10819) keeps the stream open and sends nothing. So, while the watch is
in use, the stamp is also read (linearizable, failing over like every read) about every
CHECK_S; the memory answers a request only if such a read that began at most MAX_AGE_S ago
confirmed it. A read that finds the stamp ahead of the watch re-opens the watch (on the
member the reads now use). So a request is answered with a stamp that includes every auth
change whose write returned MAX_AGE_S or more before the request asked; usually the watch's
event arrives within milliseconds (etcd queues it when it applies the write, before it
answers it), so in practice the next request anywhere sees the change. While the watch is not established (starting, a
broken stream reconnecting) or not confirmed recently, the stamp is read from etcd per
request (`freshread.py`): a lost or stuck stream never leaves a stale answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from storage.metadata.freshread import FreshRead

log = logging.getLogger("tessera.metadata.etcd")

CHECK_S = 0.25  # how often a stamp in use is read to confirm the watch
MAX_AGE_S = 1.0  # the memory answers only if a read begun this recently confirmed it
IDLE_S = 60.0  # no checks once no request asked for this long (the next one reads)
WARN_AFTER_S = 30.0  # requests reading the stamp this long: one warning (until confirmed)

Watch = Callable[[Callable[[], None], Callable[[], None]], AsyncIterator[list[int]]]


class WatchedStamp:
    """`get()` the stamp: from memory while the watch stands and a recent read confirmed
    it, else read (see module)."""

    def __init__(self, read: Callable[[], Awaitable[int]], watch: Watch) -> None:
        """`read()` reads the stamp from etcd (linearizable); `watch(on_created, on_broken)`
        yields the revisions of AUTH_CHANGE's changes, calling `on_created` each time a
        stream is confirmed and `on_broken` each time one ends."""
        self._read = read
        self._fresh = FreshRead(read)
        self._watch = watch
        self._known = 0  # the last stamp seen (read or watched)
        self._live = False  # the watch stands and `_known` was read since it was confirmed
        self._epoch = 0  # streams confirmed: a read for an older one does not make it live
        self._confirmed = 0.0  # monotonic start of the last read that found `_known` current
        self._used = 0.0  # monotonic time of the last get()
        self._task: asyncio.Task[None] | None = None
        self._confirm: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self.checks = 0  # confirming reads (tests)
        self.unconfirmed = 0  # requests that read because no check was recent (tests)
        self.reads = 0  # requests that read the stamp from etcd (the watch could not answer)
        self._reading_since: float | None = None  # monotonic: first such read since confirmed
        self._warned = False  # the warning for this stretch of reads was logged

    async def get(self) -> int:
        self._used = now = time.monotonic()
        if self._live:
            if now - self._confirmed <= MAX_AGE_S:
                return self._known
            self.unconfirmed += 1  # the checks stalled (a slow or hung member): read
        self._reading(now)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._follow())
        if self._checker is None or self._checker.done():
            self._checker = loop.create_task(self._check_loop())
        return await self._fresh.get()

    def _reading(self, now: float) -> None:
        """Count a request that reads the stamp; warn once when requests have read it for
        WARN_AFTER_S (a watch that never confirms costs a read per request, unseen else)."""
        self.reads += 1
        if self._reading_since is None:
            self._reading_since = now
        elif not self._warned and now - self._reading_since >= WARN_AFTER_S:
            self._warned = True
            log.warning("auth change watch not confirmed for %.0f s: every request reads the "
                        "auth stamp from etcd (%d reads); see `tessera status`",
                        now - self._reading_since, self.reads)

    def _confirmed_now(self, began: float) -> None:
        """A read that began at `began` confirmed the watched stamp."""
        self._confirmed = began
        self._reading_since = None
        self._warned = False

    def state(self) -> dict[str, object]:
        """For metrics and `tessera status`: `state` is "confirmed" (the watch answers
        requests from memory now), "reading" (requests read the stamp from etcd: a stretch
        of such reads is open and a request came within IDLE_S) or "idle" (no request reads
        it now: none yet, none for IDLE_S so the checks paused, or none since the last
        confirmation lapsed; the next one reads it once and resumes the checks). Only
        "reading" costs anything. `warned`: the reads went on WARN_AFTER_S (one log line)."""
        now = time.monotonic()
        since = self._reading_since
        confirmed = self._live and now - self._confirmed <= MAX_AGE_S
        if confirmed:
            state = "confirmed"
        elif since is not None and self._used and now - self._used < IDLE_S:
            state = "reading"
        else:
            state = "idle"
        return {"state": state, "confirmed": confirmed, "reads": self.reads,
                "warned": self._warned,
                "reading_for_s": round(now - since, 1) if since is not None else None}

    async def _follow(self) -> None:
        """Follow the watch for the life of the store (or until a check re-opens it)."""
        try:
            async for revisions in self._watch(self._created, self._broken):
                self._known = max([self._known, *revisions])
        except Exception:  # noqa: BLE001 - requests read the stamp meanwhile
            log.exception("auth change watch stopped; the stamp is read per request")
        finally:
            self._live = False

    def _created(self) -> None:
        """A stream is confirmed: every change from now on will be seen. The stamp is read
        once more (a change may have come between the last one seen and now); live after."""
        self._epoch += 1
        self._confirm = asyncio.get_running_loop().create_task(self._catch_up(self._epoch))

    async def _catch_up(self, epoch: int) -> None:
        began = time.monotonic()
        try:
            stamp = await self._fresh.get()
        except Exception as exc:  # noqa: BLE001 - not live: requests go on reading it
            log.info("auth change stamp not read after the watch began: %s", exc)
            return
        if epoch == self._epoch:  # no break since that stream was confirmed
            self._known = max(self._known, stamp)
            self._confirmed_now(began)
            self._live = True

    def _broken(self) -> None:
        self._live = False
        self._epoch += 1

    async def _check_loop(self) -> None:
        """While the stamp is in use and the watch live, read it about every CHECK_S (a
        timer: requests never wait for it unless it falls MAX_AGE_S behind)."""
        while True:
            await asyncio.sleep(CHECK_S)
            if self._live and time.monotonic() - self._used < IDLE_S:
                await self._check()

    async def _check(self) -> None:
        """Read the stamp: equal to the watched one confirms the watch until MAX_AGE_S after
        this read began; ahead of it means the watch missed a change (a hung member, or an
        event still on its way: then re-opening costs one new stream), so it is re-opened."""
        epoch, began = self._epoch, time.monotonic()
        self.checks += 1
        try:
            stamp = await self._read()
        except Exception as exc:  # noqa: BLE001 - unconfirmed: requests read it meanwhile
            log.info("auth change stamp check failed: %s", exc)
            return
        if epoch != self._epoch:
            return  # a new stream meanwhile: its own catch-up read decides
        if stamp > self._known:
            log.warning("auth change watch missed a change (%d > %d); re-opening it",
                        stamp, self._known)
            self._known = stamp
            self._broken()
            if self._task is not None:
                self._task.cancel()  # get() starts a new one, on the member reads now use
            return
        self._confirmed_now(began)

    async def close(self) -> None:
        for task in (self._task, self._confirm, self._checker):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
