"""Point reads shared by concurrent callers: one metadata read per key in flight.

The gateway's short-lived caches (access keys, tenant records) expire under load while
dozens of requests are in flight; each would read the same record on its miss. Here the
first miss starts the read (a task of its own, so a caller that goes away does not cancel
it for the others) and every miss on the same key meanwhile waits for that read. Only for
records the callers cache for seconds anyway: a read already in flight when a request
arrives may linearize before it. A change made in this process (`forget`) ends the sharing:
callers after it start a read of their own, so none is served a read that began before the
change (a revoked key, a shredded tenant); and it bumps the key's `generation`, so a caller
whose read began before the change can tell not to cache what it got.
"""

from __future__ import annotations

import asyncio
import time

from storage.metadata import Item, MetadataStore


class SharedReads:
    """`meta.get`, one read per key at a time (see the module docstring)."""

    def __init__(self, meta: MetadataStore) -> None:
        self._meta = meta
        # key -> (tag, when the read began (monotonic), the read)
        self._inflight: dict[bytes, tuple[int, float, asyncio.Task[Item | None]]] = {}
        self._generations: dict[bytes, int] = {}  # keys changed here: times forgotten
        self.reads = 0  # reads actually sent (tests)

    async def get(self, key: bytes, tag: int = 0) -> Item | None:
        """`meta.get(key)`, joining a read in flight only if it was started with the same
        `tag` (the TenantService passes the auth change stamp it read just before: a read
        begun under an older stamp may predate a revoke)."""
        return (await self.read(key, tag))[1]

    async def read(self, key: bytes, tag: int = 0) -> tuple[float, Item | None]:
        """`get`, with the time.monotonic() at which the read it got began (a joined read
        may have begun before the caller asked): what it says may be stale from then on,
        so a cache of it expires counting from there."""
        entry = self._inflight.get(key)
        if entry is None or entry[0] != tag:
            self.reads += 1
            began = time.monotonic()
            task = asyncio.get_running_loop().create_task(self._meta.get(key))
            self._inflight[key] = (tag, began, task)
            task.add_done_callback(lambda t, k=key: self._done(k, t))
        else:
            _, began, task = entry
        return began, await asyncio.shield(task)

    def generation(self, key: bytes) -> int:
        """How often this process changed `key`: a read may be cached only if this is the
        same after it as before it."""
        return self._generations.get(key, 0)

    def forget(self, key: bytes) -> None:
        """This process changed `key`: later callers read afresh, not the read in flight."""
        self._inflight.pop(key, None)
        self._generations[key] = self._generations.get(key, 0) + 1

    def _done(self, key: bytes, task: asyncio.Task[Item | None]) -> None:
        entry = self._inflight.get(key)
        if entry is not None and entry[2] is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter that is still there got it
