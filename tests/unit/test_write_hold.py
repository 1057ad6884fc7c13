"""A write's share of the upload budget (`storage/writehold.py`): its minimum reserved at
admission, extra segment slots only while free, each given back as its segment is freed,
frames counted from the coding reserve. A stateful test drives many writes through
admission, segments and frames taken and freed, and cancellations, and checks the
accounting after every step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.s3.bodyrecv import BLOCK_BYTES, READY_BLOCKS
from storage.errors import Overloaded
from storage.uploadbudget import RECEIVE_BYTES, UploadBudget
from storage.widereads import WIDE_READ_BYTES
from storage.writehold import Users, WriteHold

MiB = 1024 * 1024


def test_receive_bytes_covers_both_ways_a_body_is_received() -> None:
    assert RECEIVE_BYTES >= (READY_BLOCKS + 1) * BLOCK_BYTES  # bodyrecv: ready + filling
    assert RECEIVE_BYTES >= 3 * WIDE_READ_BYTES  # widereads: a full buffer and a read


def test_a_slow_write_holds_its_minimum_not_the_depth_it_used() -> None:
    async def main() -> None:
        budget = UploadBudget(100 * MiB)
        hold = WriteHold(budget, 3 * MiB, 10 * MiB, 6)
        await hold.admit(None)
        assert budget.in_use == 13 * MiB
        slots = []
        for _ in range(4):  # a fast stretch: four segments in flight
            await hold.take()
            slots.append(Users(1, hold.free))
        assert budget.in_use == 43 * MiB and hold.extra == 3
        for s in slots:
            s.drop()
        assert budget.in_use == 13 * MiB and hold.busy == 0  # extras went back at once
        hold.close()
        assert budget.in_use == 0

    asyncio.run(main())


def test_extra_slots_never_go_ahead_of_a_write_waiting_for_admission() -> None:
    async def main() -> None:
        budget = UploadBudget(30 * MiB)
        first = WriteHold(budget, 0, 10 * MiB, 3)
        await first.admit(None)
        await first.take()
        second = WriteHold(budget, 0, 25 * MiB, 1)
        waiting = asyncio.create_task(second.admit(None))
        await asyncio.sleep(0)
        assert not waiting.done()
        assert not first.try_take()  # 10 more would fit, but a write waits in line
        first.close()
        await waiting
        second.close()
        assert budget.in_use == 0

    asyncio.run(main())


def test_a_write_with_no_slot_waits_for_its_own_not_the_budget() -> None:
    async def main() -> None:
        budget = UploadBudget(20 * MiB)
        hold = WriteHold(budget, 0, 10 * MiB, 4)
        other = await budget.acquire(10 * MiB)  # the rest of the budget is someone else's
        await hold.admit(None)
        await hold.take()
        slot = Users(1, hold.free)
        nxt = asyncio.create_task(hold.take())
        await asyncio.sleep(0)
        assert not nxt.done()
        slot.drop()  # its own segment was sent: the slot is reused, no budget asked
        await asyncio.wait_for(nxt, 30)
        assert budget.in_use == 20 * MiB and budget.waited == 0
        hold.close()
        budget.release(other)
        assert budget.in_use == 0

    asyncio.run(main())


def test_frames_always_have_room_however_full_admissions_are() -> None:
    async def main() -> None:
        budget = UploadBudget(40 * MiB, reserve=10 * MiB)
        holds = [WriteHold(budget, 0, 10 * MiB, 1) for _ in range(4)]
        for h in holds[:3]:
            await h.admit(None)
        fourth = asyncio.create_task(holds[3].admit(None))  # 30 of 30 admitted: it waits
        await asyncio.sleep(0)
        assert not fourth.done() and budget.in_use == 30 * MiB
        give_back = await asyncio.wait_for(holds[0].take_frames(10 * MiB), 30)
        assert budget.in_use == 40 * MiB  # the reserve: a held segment can be coded
        assert holds[1].try_frames(MiB) is None
        waiting = asyncio.create_task(holds[1].take_frames(10 * MiB))
        await asyncio.sleep(0)
        holds[2].close()  # frames waiting go ahead of the admission waiting
        await asyncio.wait_for(waiting, 30)
        assert not fourth.done()
        give_back()
        for h in holds[:3]:
            h.close()
        await asyncio.wait_for(fourth, 30)
        holds[3].close()
        assert budget.in_use == 0

    asyncio.run(main())


def test_only_a_write_with_no_frame_set_out_goes_ahead_of_admissions() -> None:
    """A further frame set is taken like extra depth (under the ceiling, nobody waiting);
    only a write with none out may pass a waiting admission and use the reserve
    (review15c finding 2)."""
    async def main() -> None:
        budget = UploadBudget(40 * MiB, reserve=10 * MiB)  # ceiling 30
        a, b = WriteHold(budget, 0, 10 * MiB, 6), WriteHold(budget, 0, 10 * MiB, 6)
        await a.admit(None)
        await b.admit(None)
        first = a.try_frames(5 * MiB)  # 25: under the ceiling, nobody waits
        assert first is not None
        late = WriteHold(budget, 0, 10 * MiB, 1)
        admission = asyncio.create_task(late.admit(None))  # 35 > 30: waits
        await asyncio.sleep(0)
        assert not admission.done()
        assert a.try_frames(5 * MiB) is None  # would pass the waiting admission
        b_frames = b.try_frames(5 * MiB)  # none out: ahead of it, from the reserve
        assert b_frames is not None and budget.in_use == 30 * MiB
        second = asyncio.create_task(a.take_frames(5 * MiB))
        await asyncio.sleep(0)
        assert not second.done()  # waits for its own set to be sent
        first()
        a_frames = await asyncio.wait_for(second, 30)
        assert budget.in_use == 30 * MiB and not admission.done()
        b_frames()
        a_frames()
        await asyncio.wait_for(admission, 30)
        for h in (a, b, late):
            h.close()
        assert budget.in_use == 0

    asyncio.run(main())


def test_a_write_has_at_most_its_depth_of_frame_sets_out() -> None:
    async def main() -> None:
        budget = UploadBudget(100 * MiB, reserve=10 * MiB)
        hold = WriteHold(budget, 0, MiB, 2)
        await hold.admit(None)
        first = hold.try_frames(5 * MiB)
        assert first is not None and hold.try_frames(5 * MiB) is not None
        assert hold.try_frames(5 * MiB) is None  # room in the budget, but two are out
        third = asyncio.create_task(hold.take_frames(5 * MiB))
        await asyncio.sleep(0)
        assert not third.done()
        first()  # one was sent: the third may be coded
        await asyncio.wait_for(third, 30)
        assert hold.frame_sets == 2 and budget.in_use == MiB + 10 * MiB
        hold.close()
        assert budget.in_use == 0

    asyncio.run(main())


class HoldMachine(RuleBasedStateMachine):
    """Writes admitted, taking and freeing segment slots, failing and being cancelled, on
    a budget of a few slots; the loop is stepped by hand between rules."""

    LIMIT = 40
    RESERVE = 8

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.budget = UploadBudget(self.LIMIT, reserve=self.RESERVE)
        self.writes: dict[int, tuple[WriteHold, asyncio.Task[None], list[Callable[[], None]]]] = {}
        self.next = 0

    def _step(self) -> None:
        for _ in range(3):
            self.loop.run_until_complete(asyncio.sleep(0))

    def _drop(self, let_go: Callable[[], None]) -> None:
        """A segment is coded or its frames sent (on the loop, as in the gateway)."""
        self.loop.call_soon(let_go)
        self._step()

    async def _write(self, hold: WriteHold, segments: int, frames: int,
                     slots: list[Callable[[], None]], wait_s: float | None) -> None:
        try:
            await hold.admit(wait_s)
        except Overloaded:
            return
        try:
            for _ in range(segments):
                await hold.take()
                slots.append(Users(1, hold.free).drop)
                slots.append(hold.try_frames(frames) or await hold.take_frames(frames))
            while slots:  # the end waits for its segments to be sent
                await asyncio.sleep(0)
        finally:
            hold.close()

    @rule(receive=st.integers(0, 8), slot=st.integers(1, 30), depth=st.integers(1, 6),
          segments=st.integers(0, 8), frames=st.integers(0, 12), deadline=st.booleans())
    def start(self, receive: int, slot: int, depth: int, segments: int, frames: int,
              deadline: bool) -> None:
        hold = WriteHold(self.budget, receive, slot, depth)
        slots: list[Callable[[], None]] = []
        task = self.loop.create_task(self._write(hold, segments, frames, slots,
                                                 0 if deadline else None))
        self.writes[self.next] = (hold, task, slots)
        self.next += 1
        self._step()

    @precondition(lambda self: any(s for _, _, s in self.writes.values()))
    @rule(data=st.data())
    def send_a_segment(self, data: st.DataObject) -> None:
        held = [s for _, _, s in self.writes.values() if s]
        slots = data.draw(st.sampled_from(held))
        self._drop(slots.pop(data.draw(st.integers(0, len(slots) - 1))))

    @precondition(lambda self: self.writes)
    @rule(data=st.data())
    def cancel_a_write(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.writes)))
        _, task, slots = self.writes.pop(key)
        task.cancel()
        self._step()
        for s in slots:  # its senders let go after the write ended: nothing moves
            self._drop(s)

    @rule()
    def step(self) -> None:
        self._step()

    @invariant()
    def accounting_holds(self) -> None:
        b = self.budget
        assert 0 <= b.in_use <= b.limit
        live = sum(h.held for h, t, _ in self.writes.values())
        assert b.in_use == live  # every byte reserved is a live write's, none lost
        frames = sum(h.frames for h, _, _ in self.writes.values())
        assert b.in_use - frames <= b.limit - b.reserve  # the reserve is for frames only
        for h, _, _ in self.writes.values():
            assert 0 <= h.busy <= 1 + h.extra

    def teardown(self) -> None:
        for _ in range(200):
            if all(t.done() for _, t, _ in self.writes.values()):
                break
            for _, _, slots in self.writes.values():
                while slots:
                    self._drop(slots.pop())
            self._step()
        try:
            assert all(t.done() for _, t, _ in self.writes.values())  # every write ended
            assert self.budget.in_use == 0  # and gave back all it held
        finally:
            for _, t, _ in self.writes.values():
                t.cancel()
            self._step()
            self.loop.close()


HoldMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40)
test_hold_accounting = HoldMachine.TestCase
