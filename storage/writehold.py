"""One stripe write's share of the upload budget, counted by the buffers it holds.

A write is admitted once its minimum fits (`WriteHold.admit`: the body's receive buffers
plus one segment slot, waiting in line like any reservation, before a byte of its body is
read); it then holds that minimum until it ends, so it can always finish: one slot is
enough to move the whole body segment by segment. A slot covers one segment's plaintext
(the receive blocks it was cut from) and its frame set, from before the segment is read
until its digests took it and every node sender let go of its frame. More slots (a deeper
pipeline) are taken from the budget only while they are free and nobody waits for
admission (`UploadBudget.try_acquire`), and each extra one goes back the moment its
segment is freed: a slow client holds its minimum, never the depth it used a moment ago.
A write that finds no slot sends what it has coded and waits for one of its own slots, so
it stops reading its body (the client's socket holds the rest) and never waits on the
budget while holding part of it: no deadlock.
"""

from __future__ import annotations

import asyncio

from storage.uploadbudget import UploadBudget


class WriteHold:
    """`receive` + one `slot` bytes reserved at admission, up to `slots` slots in all."""

    def __init__(self, budget: UploadBudget, receive: int, slot: int, slots: int) -> None:
        self._budget = budget
        self._receive = receive
        self._slot = slot
        self._max = max(slots, 1)
        self.base = 0  # bytes reserved at admission (0: not admitted, or closed)
        self.extra = 0  # slots taken beyond the base one
        self.busy = 0  # slots holding a segment
        self._freed: asyncio.Event | None = None
        self._closed = False

    @property
    def held(self) -> int:
        """Bytes of the budget this write holds now."""
        return self.base + self.extra * self._slot

    async def admit(self, wait_s: float | None) -> None:
        """Reserve the minimum (cut to the budget's limit), in line, at most `wait_s`."""
        self.base = await self._budget.acquire(self._receive + self._slot, wait_s)

    def try_take(self) -> bool:
        """A slot for the next segment if one is free now (own, or an extra the budget
        spares); False if the write must wait for one of its segments to be freed."""
        if self.busy < 1 + self.extra:
            self.busy += 1
            return True
        if self.busy < self._max and self._budget.try_acquire(self._slot):
            self.extra += 1
            self.busy += 1
            return True
        return False

    async def take(self) -> None:
        """A slot for the next segment, waiting for one of this write's own to be freed."""
        while not self.try_take():
            self._freed = asyncio.Event()
            await self._freed.wait()

    def free(self) -> None:
        """A segment's buffers are gone: its slot is free, and an extra one goes back."""
        if self._closed:  # a late sender's callback: all was given back already
            return
        self.busy -= 1
        if self.extra and self.busy < 1 + self.extra:
            self.extra -= 1
            self._budget.release(self._slot)
        if self._freed is not None:
            self._freed.set()

    def close(self) -> None:
        """The write ended (any way): everything it holds goes back to the budget. Call it
        once nothing of the write holds a buffer any more (its coding and senders ended)."""
        held, self.base, self.extra, self.busy = self.held, 0, 0, 0
        self._closed = True
        if held:
            self._budget.release(held)


class SegmentSlot:
    """Counts the holders of one segment's buffers (`users`); frees its slot at the last."""

    def __init__(self, hold: WriteHold, users: int) -> None:
        self._hold: WriteHold | None = hold
        self._users = users
        if users <= 0:
            self._free()

    def add(self, n: int) -> None:
        self._users += n

    def drop(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self._free()

    def _free(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.free()
