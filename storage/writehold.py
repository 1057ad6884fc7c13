"""One stripe write's share of the upload budget, counted by the buffers it holds.

A write is admitted once its minimum fits (`WriteHold.admit`: the body's receive buffers
plus one segment slot, waiting in line like any reservation, before a byte of its body is
read); it holds that minimum until it ends. A segment slot covers one segment's plaintext
(the receive blocks it was cut from) from before the segment is read until it is coded
and its digests took it. The frames a segment is coded into are counted from just before
it is coded until every node sender let go of its frame (`frames`): taken from the
budget's coding reserve when the rest is in use by a write with no other frame set out,
so a write holding a segment can always code it once its own and other frames have been
sent; further frame sets, and more segment slots (a deeper pipeline), are
taken only while they are free and nobody waits (`UploadBudget.try_acquire`), and each
extra one goes back the moment its segment is freed: a slow client holds its minimum,
never the depth it used a moment ago. A write that finds no slot (or no room for frames)
sends what it has coded first, then waits for its own segments to be freed (or for
frames to be sent), so it stops reading its body (the client's socket holds the rest)
and never waits for an admission while holding part of the budget: no deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from storage.uploadbudget import UploadBudget


class WriteHold:
    """`receive` + one `slot` bytes reserved at admission, up to `slots` slots in all,
    and the frames of up to `slots` segments being coded and sent."""

    def __init__(self, budget: UploadBudget, receive: int, slot: int, slots: int) -> None:
        self._budget = budget
        self._receive = receive
        self._slot = slot
        self._max = max(slots, 1)
        self.base = 0  # bytes reserved at admission (0: not admitted, or closed)
        self.extra = 0  # slots taken beyond the base one
        self.busy = 0  # slots holding a segment
        self.frames = 0  # bytes of frames held
        self.frame_sets = 0  # ... in this many frame sets
        self._freed: asyncio.Event | None = None
        self._closed = False

    @property
    def held(self) -> int:
        """Bytes of the budget this write holds now."""
        return self.base + self.extra * self._slot + self.frames

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
        """A segment's plaintext is gone: its slot is free, and an extra one goes back."""
        if self._closed:  # a late callback: all was given back already
            return
        self.busy -= 1
        if self.extra and self.busy < 1 + self.extra:
            self.extra -= 1
            self._budget.release(self._slot)
        if self._freed is not None:
            self._freed.set()

    def try_frames(self, nbytes: int) -> Callable[[], None] | None:
        """Room for a segment's frames if there is some now: the function that gives it
        back (call it once every holder let go), else None."""
        if self.frame_sets >= self._max:
            return None
        n = self._budget.try_acquire_frames(nbytes, first=not self.frame_sets)
        return None if n is None else self._frames_taken(n)

    async def take_frames(self, nbytes: int) -> Callable[[], None]:
        """Room for a segment's frames: while this write has frame sets out, as
        `try_frames` spares it or else once its own are sent; with none out, ahead of
        admissions and from the reserve, waiting for other frames to be sent. The
        function that gives it back."""
        while self.frame_sets:
            give_back = self.try_frames(nbytes)
            if give_back is not None:
                return give_back
            self._freed = asyncio.Event()
            await self._freed.wait()
        return self._frames_taken(await self._budget.acquire_frames(nbytes))

    def _frames_taken(self, n: int) -> Callable[[], None]:
        self.frames += n
        self.frame_sets += 1

        def give_back() -> None:
            if not self._closed:
                self.frames -= n
                self.frame_sets -= 1
                self._budget.release(n)
                if self._freed is not None:
                    self._freed.set()
        return give_back

    def close(self) -> None:
        """The write ended (any way): everything it holds goes back to the budget. Call it
        once nothing of the write holds a buffer any more (its coding and senders ended)."""
        held, self.base, self.extra, self.busy, self.frames = self.held, 0, 0, 0, 0
        self.frame_sets = 0
        self._closed = True
        if held:
            self._budget.release(held)


class Users:
    """Counts the holders of one buffer (`users`); calls `on_last` when the last lets go."""

    def __init__(self, users: int, on_last: Callable[[], None]) -> None:
        self._on_last: Callable[[], None] | None = on_last
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
        on_last, self._on_last = self._on_last, None
        if on_last is not None:
            on_last()
