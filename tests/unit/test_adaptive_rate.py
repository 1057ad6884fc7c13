"""The adaptive busy rate (storage/adaptive_rate.py) and the throttle that follows it.

Deterministic: fake clocks; the event loop's lag is whatever the fake `yield_` says.
"""

from __future__ import annotations

import asyncio

import pytest

from storage.adaptive_rate import (
    ADJUST_S,
    GROW,
    PROBE_S,
    RESTART_S,
    SHRINK,
    UNLIMITED_CEILING,
    AdaptiveRate,
)
from storage.throttle import Throttle
from tests.unit.test_throttle import FakeClock, run_consumes

MIB = 2**20


def test_rate_grows_while_lag_is_within_bound_and_stops_at_the_ceiling() -> None:
    clock = FakeClock()
    a = AdaptiveRate(4 * MIB, 64 * MIB, 0.025, clock=clock)
    assert a.current() == 4 * MIB
    seen = []
    for _ in range(12):
        clock.now += ADJUST_S
        a.observe(0.001)
        seen.append(a.current())
    assert seen[0] == pytest.approx(4 * MIB * GROW)
    assert seen == sorted(seen) and seen[-1] == 64 * MIB


def test_rate_halves_when_lag_exceeds_bound_never_below_floor() -> None:
    clock = FakeClock()
    a = AdaptiveRate(4 * MIB, 0, 0.025, clock=clock)  # no ceiling: unlimited idle rate
    a.rate = 100 * MIB
    clock.now += ADJUST_S
    a.observe(0.001)
    a.observe(0.2)  # the mean of the interval's samples counts: 0.1 s
    clock.now += ADJUST_S
    a.observe(0.1)  # closes the interval: mean 0.15 s
    assert a.current() == pytest.approx(100 * MIB * GROW * SHRINK)
    assert a.snapshot()["loop_lag_ms"] == 150.0
    for lag in (0.0, 0.0, 0.09):  # one outlier among calm samples...
        a.observe(lag)
    clock.now += ADJUST_S
    a.observe(0.0)  # ...the interval's mean (22.5 ms) is within the bound
    assert a.current() == pytest.approx(100 * MIB * GROW * SHRINK * GROW)
    for _ in range(20):
        clock.now += ADJUST_S
        a.observe(1.0)
    assert a.current() == 4 * MIB


def test_bound_zero_is_the_fixed_busy_rate() -> None:
    clock = FakeClock()
    a = AdaptiveRate(4 * MIB, 64 * MIB, 0.0, clock=clock)
    assert not a.enabled
    for _ in range(10):
        clock.now += ADJUST_S
        a.observe(0.0)
    assert a.current() == 4 * MIB


def test_probe_measures_the_wait_for_the_loop_at_most_every_probe_interval() -> None:
    clock = FakeClock()
    calls = [0]

    async def slow_loop() -> None:  # the loop's other callbacks held it for 40 ms
        calls[0] += 1
        clock.now += 0.040

    a = AdaptiveRate(4 * MIB, 64 * MIB, 0.025, clock=clock, yield_=slow_loop)

    async def main() -> None:
        await a.probe()
        await a.probe()  # within PROBE_S of the first: no sample
        clock.now += PROBE_S + ADJUST_S
        await a.probe()

    asyncio.run(main())
    assert calls[0] == 2
    assert a.lag_s == pytest.approx(0.040) and a.current() == 4 * MIB  # over the bound


@pytest.mark.parametrize(("lag", "max_seconds", "min_seconds"), [(0.001, 4.0, 0.0),
                                                                 (0.1, 999, 12.0)])
def test_throttle_follows_the_adaptive_rate_while_clients_are_busy(
        lag: float, max_seconds: float, min_seconds: float) -> None:
    """64 MiB while clients are busy: with a calm loop the rate climbs from the 4 MiB/s floor
    (done in a few seconds, the old fixed rate took 16 s); with a lagging loop it stays at
    the floor (at least 16 s less the first chunk)."""
    clock = FakeClock()

    async def loop_wait() -> None:
        clock.now += lag

    a = AdaptiveRate(4 * MIB, 200 * MIB, 0.025, clock=clock, yield_=loop_wait)
    t = Throttle(200 * MIB, 4 * MIB, busy=lambda: True, clock=clock, sleep=clock.sleep,
                 adaptive=a)
    run_consumes(t, [MIB] * 64)
    assert min_seconds <= clock.now <= max_seconds


def test_idle_clients_leave_the_adaptive_rate_alone() -> None:
    clock = FakeClock()
    probes = [0]

    async def loop_wait() -> None:
        probes[0] += 1

    a = AdaptiveRate(4 * MIB, 100 * MIB, 0.025, clock=clock, yield_=loop_wait)
    t = Throttle(100 * MIB, 4 * MIB, busy=lambda: False, clock=clock, sleep=clock.sleep,
                 adaptive=a)
    run_consumes(t, [MIB] * 20)
    assert probes[0] == 0 and a.current() == 4 * MIB
    assert t.rate() == 100 * MIB


def test_an_unlimited_idle_rate_still_caps_the_busy_rate_and_it_backs_off() -> None:
    """`rate_bytes_s = 0` (unlimited when idle) once made the ceiling infinite: after a long
    calm the rate was 1e217 B/s, then inf (inf * SHRINK is inf: no back-off) and the stats'
    snapshot raised OverflowError in every repair step."""
    clock = FakeClock()
    a = AdaptiveRate(4 * MIB, 0, 0.025, clock=clock)
    for _ in range(2 * 60 * 30):  # 30 minutes of calm
        clock.now += ADJUST_S
        a.observe(0.001)
    assert a.current() == UNLIMITED_CEILING
    assert a.snapshot()["busy_rate_now"] == UNLIMITED_CEILING
    for _ in range(12):  # 6 s of lag bring it back to the floor
        clock.now += ADJUST_S
        a.observe(0.5)
    assert a.current() == 4 * MIB


def test_paced_work_resuming_after_a_pause_starts_again_from_the_floor() -> None:
    clock = FakeClock()

    async def calm() -> None:
        clock.now += 0.001

    a = AdaptiveRate(4 * MIB, 200 * MIB, 0.025, clock=clock, yield_=calm)

    async def probes(seconds: float) -> None:
        end = clock.now + seconds
        while clock.now < end:
            await a.probe()
            clock.now += PROBE_S

    asyncio.run(probes(10.0))
    assert a.current() == 200 * MIB  # grown while clients were calm
    clock.now += RESTART_S + 1  # no paced work (clients idle, or nothing to repair)
    asyncio.run(probes(0.2))
    assert a.current() == 4 * MIB  # clients are back: from the floor, not the old ceiling
