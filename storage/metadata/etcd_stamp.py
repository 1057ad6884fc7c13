"""The auth change stamp of the etcd store, kept current by a watch instead of a read per
request.

Every write of a tenant or access-key record puts AUTH_CHANGE in its own transaction
(`EtcdStore.txn_or_read`, `put`, `delete`), so that key's mod_revision changes with each. A
gateway checks the stamp on every authenticated request; reading it from etcd each time
(measured: a 4 KiB PUT at concurrency 1 went from 1 to 2 etcd requests and from ~2.8-3.4
to ~4.2 ms of server CPU, most of it the members' ReadIndex) costs too much, so each
process watches the key and answers from memory while its watch stream stands.

etcd queues a change's watch events when it applies the change, before it answers the
write; so the event is on its way to every watching gateway before the revoking call
returns to its client, which must then send its next request (milliseconds of work) to
reach another gateway: in practice the next request anywhere sees the change. While the
watch is not established (starting, or a broken stream reconnecting) the stamp is read
from etcd per request (`freshread.py`), so a lost stream never leaves a stale answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from storage.metadata.freshread import FreshRead

log = logging.getLogger("tessera.metadata.etcd")

Watch = Callable[[Callable[[], None], Callable[[], None]], AsyncIterator[list[int]]]


class WatchedStamp:
    """`get()` the stamp: from memory while the watch stands, else read (see module)."""

    def __init__(self, read: Callable[[], Awaitable[int]], watch: Watch) -> None:
        """`read()` reads the stamp from etcd (linearizable); `watch(on_created, on_broken)`
        yields the revisions of AUTH_CHANGE's changes, calling `on_created` each time a
        stream is confirmed and `on_broken` each time one ends."""
        self._fresh = FreshRead(read)
        self._watch = watch
        self._known = 0  # the last stamp seen (read or watched)
        self._live = False  # the watch stands and `_known` was read since it was confirmed
        self._epoch = 0  # streams confirmed: a read for an older one does not make it live
        self._task: asyncio.Task[None] | None = None
        self._confirm: asyncio.Task[None] | None = None

    async def get(self) -> int:
        if self._live:
            return self._known
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._follow())
        return await self._fresh.get()

    async def _follow(self) -> None:
        """Follow the watch for the life of the store."""
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
        try:
            stamp = await self._fresh.get()
        except Exception as exc:  # noqa: BLE001 - not live: requests go on reading it
            log.info("auth change stamp not read after the watch began: %s", exc)
            return
        if epoch == self._epoch:  # no break since that stream was confirmed
            self._known = max(self._known, stamp)
            self._live = True

    def _broken(self) -> None:
        self._live = False
        self._epoch += 1

    async def close(self) -> None:
        for task in (self._task, self._confirm):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
