"""The adaptive throttle of repair and rebalancing, and the client activity it reads.

Deterministic: a fake clock that only moves when the throttle sleeps.
"""

from __future__ import annotations

import asyncio

import pytest

from storage.activity import ClientActivity
from storage.config import env_settings
from storage.throttle import SLICE_S, Throttle

MIB = 2**20


class FakeClock:
    """Time that advances only through `sleep`; concurrent sleepers overlap like real ones."""

    def __init__(self) -> None:
        self.now = 0.0
        self.on_tick: list = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, d: float) -> None:
        target = self.now + d
        await asyncio.sleep(0)  # let other sleepers start theirs at the same fake time
        self.now = max(self.now, target)
        for f in self.on_tick:
            f(self.now)


def run_consumes(t: Throttle, chunks: list[int], parallel: int = 1) -> None:
    async def worker(mine: list[int]) -> None:
        for n in mine:
            await t.consume(n)

    async def main() -> None:
        await asyncio.gather(*(worker(chunks[i::parallel]) for i in range(parallel)))

    asyncio.run(main())


def test_fixed_rate_paces_bytes() -> None:
    clock = FakeClock()
    t = Throttle(10 * MIB, clock=clock, sleep=clock.sleep)
    run_consumes(t, [MIB] * 50)
    # 50 MiB at 10 MiB/s; the first chunk passes at once (paid for afterwards).
    assert clock.now == pytest.approx(4.9, abs=0.01)


@pytest.mark.parametrize(("busy", "rate", "seconds"), [(True, 2 * MIB, 5.0),
                                                     (False, 100 * MIB, 0.1)])
def test_busy_clients_slow_it_idle_clients_let_it_run(busy: bool, rate: float,
                                                      seconds: float) -> None:
    clock = FakeClock()
    t = Throttle(100 * MIB, busy_rate=2 * MIB, busy=lambda: busy, clock=clock,
                 sleep=clock.sleep)
    assert t.rate() == rate
    run_consumes(t, [MIB] * 11)  # 10 MiB paid for before the 11th passes
    assert clock.now == pytest.approx(seconds, abs=0.01)


def test_unlimited_maximum_still_gives_way_to_clients() -> None:
    clock = FakeClock()
    state = {"busy": False}
    t = Throttle(0, busy_rate=4 * MIB, busy=lambda: state["busy"], clock=clock,
                 sleep=clock.sleep)
    run_consumes(t, [MIB] * 1000)
    assert clock.now == 0.0  # idle and no cap: never waits
    state["busy"] = True
    run_consumes(t, [MIB] * 9)
    assert clock.now == pytest.approx(2.0, abs=0.01)


def test_busy_rate_never_exceeds_the_maximum() -> None:
    t = Throttle(1 * MIB, busy_rate=4 * MIB, busy=lambda: True)
    assert t.rate() == 1 * MIB
    assert Throttle(1 * MIB, busy_rate=0, busy=lambda: True).rate() == 1 * MIB


def test_a_waiting_caller_speeds_up_as_soon_as_clients_leave() -> None:
    clock = FakeClock()
    state = {"busy": True}
    clock.on_tick.append(lambda now: state.update(busy=now < 1.0))
    t = Throttle(1000 * MIB, busy_rate=1 * MIB, busy=lambda: state["busy"], clock=clock,
                 sleep=clock.sleep)
    # The first 8 MiB put it 8 s in debt at the busy rate; clients leave after 1 s.
    run_consumes(t, [8 * MIB, MIB])
    assert 1.0 <= clock.now <= 1.0 + SLICE_S + 0.01


def test_clients_arriving_slow_a_fast_run_at_once() -> None:
    clock = FakeClock()
    state = {"busy": False}
    clock.on_tick.append(lambda now: state.update(busy=now >= 0.5))
    t = Throttle(100 * MIB, busy_rate=1 * MIB, busy=lambda: state["busy"], clock=clock,
                 sleep=clock.sleep)
    run_consumes(t, [MIB] * 60)
    # About 50 MiB in the first 0.5 s, then the rest at 1 MiB/s.
    assert 8.0 <= clock.now <= 11.0


def test_idle_time_banks_little_credit() -> None:
    clock = FakeClock()
    t = Throttle(10 * MIB, clock=clock, sleep=clock.sleep)
    clock.now = 100.0  # a long pause with nothing to send
    run_consumes(t, [MIB] * 21)
    # At most BURST_S (0.1 s = 1 MiB) of credit: 20 MiB still take about 1.9 s.
    assert clock.now - 100.0 == pytest.approx(1.9, abs=0.01)


def test_concurrent_callers_share_one_rate() -> None:
    clock = FakeClock()
    t = Throttle(8 * MIB, clock=clock, sleep=clock.sleep)
    run_consumes(t, [MIB // 4] * 128, parallel=8)  # 32 MiB from 8 streams
    assert clock.now == pytest.approx(32 / 8, rel=0.05)


def test_client_activity_busy_while_in_flight_and_for_a_quiet_period() -> None:
    clock = FakeClock()
    act = ClientActivity(quiet_s=1.0, clock=clock)
    assert not act.busy()
    act.begin()
    clock.now = 30.0  # a long request: busy all along
    assert act.busy()
    act.end(5 * MIB)
    clock.now = 30.9
    assert act.busy()
    clock.now = 31.0
    assert not act.busy()


def test_client_activity_counts_the_last_second() -> None:
    clock = FakeClock()
    clock.now = 10.2
    act = ClientActivity(clock=clock)
    for _ in range(3):
        act.begin()
        act.end(MIB)
    clock.now = 11.5  # the window with the three requests is now the last full second
    snap = act.snapshot()
    assert (snap.in_flight, snap.requests_last_s, snap.bytes_last_s) == (0, 3, 3 * MIB)
    assert snap.busy is False
    clock.now = 13.0  # more than a window later: nothing recent
    assert act.snapshot().requests_last_s == 0


def test_settings_read_the_busy_rates_from_the_environment() -> None:
    r = env_settings("repair", {"TESSERA_REPAIR_RATE_MBPS": "50",
                                "TESSERA_REPAIR_BUSY_RATE_MBPS": "3"})
    assert (r.rate_bytes_s, r.busy_rate_bytes_s) == (50 * MIB, 3 * MIB)
    assert env_settings("repair", {}).busy_rate_bytes_s == 4 * MIB
    b = env_settings("rebalance", {"TESSERA_REBALANCE_BUSY_RATE_MBPS": "0"})
    assert (b.rate_bytes_s, b.busy_rate_bytes_s) == (200 * MIB, 0)
