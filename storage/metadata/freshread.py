"""One read shared by concurrent callers, each served by a read that began after it asked.

Unlike `storage.sharedreads` (which lets a caller join a read already in flight), a caller
here never gets an answer older than its own call: if a read is in flight when it asks, it
waits for the next one, which starts when that one returns and serves everyone who asked
meanwhile. So under concurrency one read per round trip serves any number of callers, and
every answer is as fresh as a read of the caller's own (a write whose call returned before
the caller asked is seen). The etcd store reads its auth change stamp through this per
authenticated request only while its watch is not established or not recently confirmed
(`etcd_stamp.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FreshRead(Generic[T]):
    """`fn()` shared as the module docstring says."""

    def __init__(self, fn: Callable[[], Awaitable[T]]) -> None:
        self._fn = fn
        self._running: asyncio.Task[None] | None = None  # the read in flight
        self._next: asyncio.Future[T] | None = None  # what callers since it began wait for
        self.reads = 0  # reads actually started (tests)

    async def get(self) -> T:
        fut = self._next
        if fut is None:
            fut = self._next = asyncio.get_running_loop().create_future()
            fut.add_done_callback(_retrieve)
            if self._running is None:
                self._start()
        return await asyncio.shield(fut)

    def _start(self) -> None:
        """Start the read every caller waiting on `_next` gets; callers keep joining it
        until it actually begins (`_run`), later ones wait for the next."""
        fut = self._next
        assert fut is not None
        self.reads += 1
        self._running = asyncio.get_running_loop().create_task(self._run(fut))

    async def _run(self, fut: asyncio.Future[T]) -> None:
        if self._next is fut:
            self._next = None  # it begins now: whoever asks from here on waits for the next
        try:
            result = await self._fn()
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as exc:  # every waiter gets it, as from its own read
            fut.set_exception(exc)
        else:
            fut.set_result(result)
        finally:
            self._running = None
            if self._next is not None:
                self._start()


def _retrieve(fut: asyncio.Future[object]) -> None:
    """Mark an error retrieved: all waiters may have gone (cancelled requests)."""
    if not fut.cancelled():
        fut.exception()
