"""Seeded interleavings of background workers (tests/sim): each worker runs as an "actor"
whose steps stop at gates (points patched into the code under test); a seeded scheduler
lets one parked actor on at a time, or kills it there (a process dying at that point).

A gate knows its actor through a context variable, so tasks an actor starts (a rebuild, a
batch lane) park as that actor. The scheduler waits until every live actor is parked or done
(a condition, not a pause) before it picks, so a seed gives the same interleaving (when an
actor runs tasks side by side, which of them parks first can vary; they park one at a time).
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

ACTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("actor", default=None)
QUIET_TIMEOUT_S = 60.0  # a bound on a hung actor (the test fails rather than hang)


@dataclass
class Scheduler:
    rnd: random.Random
    crash_p: float = 0.0  # the chance a pick kills the actor at its gate instead
    crashes_left: int = 0
    parked: dict[str, tuple[str, asyncio.Future[None]]] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    slots: dict[str, asyncio.Lock] = field(default_factory=dict)  # one parked task per actor
    trace: list[str] = field(default_factory=list)  # "actor:gate" let on, "actor:gate!" killed

    async def gate(self, name: str, only: str | None = None) -> None:
        """Park the calling actor (only actor `only`, if given) here until the scheduler
        lets it on; a no-op outside an actor."""
        actor = ACTOR.get()
        if actor is None or actor not in self.tasks or only not in (None, actor):
            return
        # Tasks an actor runs side by side (a batch's rebuilds of two stripes, which random
        # placement sometimes gives) park one at a time: the next waits for the actor's slot.
        async with self.slots.setdefault(actor, asyncio.Lock()):
            if actor not in self.tasks:
                return  # killed while this task waited for the slot
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            assert actor not in self.parked, f"{actor} parked twice: {self.trace}"
            self.parked[actor] = (name, fut)
            try:
                await fut
            finally:
                if self.parked.get(actor, (None, None))[1] is fut:
                    del self.parked[actor]

    def start(self, actor: str, body: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            ACTOR.set(actor)
            await body()
        self.tasks[actor] = asyncio.ensure_future(run())

    async def _quiet(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + QUIET_TIMEOUT_S
        while not all(t.done() or a in self.parked for a, t in self.tasks.items()):
            if loop.time() > end:
                raise AssertionError(f"actors neither parked nor done: {self.trace}")
            await asyncio.sleep(0.001)  # poll the condition (threads may be coding)

    async def run(self, on_crash: Callable[[str], None]) -> None:
        """Drive the actors to their end; `on_crash(actor)` may start a replacement."""
        while True:
            await self._quiet()
            for t in self.tasks.values():
                exc = t.exception() if t.done() and not t.cancelled() else None
                if exc is not None:
                    raise exc
            if not self.parked:
                return
            actor = self.rnd.choice(sorted(self.parked))
            name, fut = self.parked[actor]
            if self.crashes_left and self.rnd.random() < self.crash_p:
                self.crashes_left -= 1
                self.trace.append(f"{actor}:{name}!")
                task = self.tasks.pop(actor)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                on_crash(actor)
            else:
                self.trace.append(f"{actor}:{name}")
                del self.parked[actor]  # (the gate's own cleanup runs only when it resumes)
                fut.set_result(None)
