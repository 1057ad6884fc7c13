"""The interleaving scheduler itself (tests/sim/interleave.py): an actor whose tasks reach
gates side by side (a repair batch rebuilding two stripes at once, as some random placements
give) is driven to its end, one parked task at a time, instead of failing the harness."""

from __future__ import annotations

import asyncio
import random

from tests.sim.interleave import ACTOR, Scheduler


async def test_sibling_tasks_of_one_actor_park_one_at_a_time() -> None:
    sch = Scheduler(random.Random(1))
    seen: list[str] = []

    async def step(tag: str) -> None:
        for gate in ("write", "commit"):
            await sch.gate(gate)
            seen.append(f"{tag}:{gate}")

    async def repair() -> None:
        assert ACTOR.get() == "repair"
        await asyncio.gather(step("a"), step("b"))  # siblings park as "repair"

    async def other() -> None:
        await sch.gate("txn")
        seen.append("gc:txn")

    sch.start("repair", repair)
    sch.start("gc", other)
    await sch.run(on_crash=lambda actor: None)
    assert sorted(seen) == ["a:commit", "a:write", "b:commit", "b:write", "gc:txn"]
    assert len(sch.trace) == 5  # every gate let on once, by the scheduler


async def test_a_killed_actor_s_waiting_sibling_runs_on_ungated() -> None:
    sch = Scheduler(random.Random(0), crash_p=1.0, crashes_left=1)
    done: list[str] = []

    async def step(tag: str) -> None:
        await sch.gate("write")
        done.append(tag)

    async def repair() -> None:
        await asyncio.gather(step("a"), step("b"))

    sch.start("repair", repair)
    await sch.run(on_crash=lambda actor: None)
    assert sch.trace == ["repair:write!"] and done == []  # the whole actor died at its gate
