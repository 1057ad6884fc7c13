"""The upload budget (`storage/uploadbudget.py`): a process-wide cap on the bytes that
uploads hold, granted whole and in arrival order so no write waits holding part of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ops.localcluster import default_config
from storage.config import load_config
from storage.crypto.aead import TAG_BYTES
from storage.uploadbudget import UploadBudget, largest_write, worker_share, write_footprint

MiB = 1024 * 1024


def test_many_writes_never_hold_more_than_the_limit_and_all_finish() -> None:
    async def main() -> UploadBudget:
        budget = UploadBudget(10 * MiB)
        held: list[int] = []

        async def write(i: int) -> None:
            async with budget.reserved((1 + i % 4) * MiB):
                held.append(budget.in_use)
                await asyncio.sleep(0)

        await asyncio.wait_for(asyncio.gather(*(write(i) for i in range(200))), 10)
        assert max(held) <= budget.limit
        return budget

    budget = asyncio.run(main())
    assert budget.in_use == 0 and budget.peak <= budget.limit and budget.waited > 0


def test_a_footprint_past_the_limit_is_cut_to_it_and_proceeds_alone() -> None:
    async def main() -> None:
        budget = UploadBudget(8 * MiB)
        async with budget.reserved(100 * MiB) as n:
            assert n == 8 * MiB and budget.in_use == 8 * MiB
        assert budget.in_use == 0

    asyncio.run(main())


def test_arrival_order_a_large_write_is_not_passed_over() -> None:
    async def main() -> list[str]:
        budget = UploadBudget(10 * MiB)
        order: list[str] = []
        first = await budget.acquire(6 * MiB)

        async def write(name: str, n: int) -> None:
            async with budget.reserved(n):
                order.append(name)

        big = asyncio.create_task(write("big", 8 * MiB))
        await asyncio.sleep(0)
        small = asyncio.create_task(write("small", 1 * MiB))  # would fit now, but waits
        await asyncio.sleep(0)
        assert order == []
        budget.release(first)
        await asyncio.gather(big, small)
        return order

    assert asyncio.run(main()) == ["big", "small"]


def test_a_cancelled_waiter_leaks_nothing_and_lets_the_next_in() -> None:
    async def main() -> None:
        budget = UploadBudget(10 * MiB)
        first = await budget.acquire(9 * MiB)
        head = asyncio.create_task(budget.acquire(10 * MiB))
        await asyncio.sleep(0)
        nxt = asyncio.create_task(budget.acquire(1 * MiB))
        await asyncio.sleep(0)
        assert not nxt.done()
        head.cancel()
        with pytest.raises(asyncio.CancelledError):
            await head
        assert await asyncio.wait_for(nxt, 30) == 1 * MiB  # fits beside the first now
        budget.release(first)
        budget.release(1 * MiB)
        assert budget.in_use == 0

    asyncio.run(main())


def test_footprint_counts_segments_and_frames_in_flight() -> None:
    small = write_footprint(1 * MiB, 1, 4, 6)
    assert 2.5 * MiB <= small < 2.6 * MiB  # the body and one frame per shard
    large = write_footprint(4 * MiB, 16, 4, 6)
    assert 58 * MiB <= large < 59 * MiB  # 4 segments and 7 frame sets of 4 MiB
    assert write_footprint(4 * MiB, -1, 4, 6) == large  # size unknown: the most
    assert write_footprint(4 * MiB, 2, 4, 6) < large  # a short part holds fewer


def test_a_small_write_that_fits_passes_a_blocked_large_one() -> None:
    """Slow holders must not stop small uploads: a write of at most a sixteenth of the
    limit that fits goes ahead of a large one waiting at the head."""
    async def main() -> None:
        budget = UploadBudget(16 * MiB)
        held = await budget.acquire(12 * MiB)  # e.g. a trickling large upload
        big = asyncio.create_task(budget.acquire(8 * MiB))
        await asyncio.sleep(0)
        assert await asyncio.wait_for(budget.acquire(1 * MiB), 30) == 1 * MiB
        assert not big.done()
        budget.release(1 * MiB)
        budget.release(held)
        assert await asyncio.wait_for(big, 30) == 8 * MiB
        budget.release(8 * MiB)
        assert budget.in_use == 0

    asyncio.run(main())


def test_no_write_waits_past_wait_s_it_is_refused_and_leaks_nothing() -> None:
    """A holder that never finishes (a client sending a byte now and then) gets a later
    large S3 write refused with Overloaded (S3 SlowDown) after its wait_s, not hung."""
    from storage.errors import Overloaded

    async def main() -> UploadBudget:
        budget = UploadBudget(16 * MiB)
        held = await budget.acquire(12 * MiB)
        with pytest.raises(Overloaded):
            await asyncio.wait_for(budget.acquire(8 * MiB, 0.05), 5)
        assert budget.in_use == 12 * MiB and not budget._waiters
        budget.release(held)
        return budget

    budget = asyncio.run(main())
    assert budget.in_use == 0 and budget.refused == 1


def test_a_single_segment_footprint_follows_its_size() -> None:
    tiny = write_footprint(1 * MiB, 1, 4, 6, 100 * 1024)
    assert 240 * 1024 <= tiny < 300 * 1024  # not the whole 1 MiB segment's 2.5 MiB
    assert write_footprint(1 * MiB, 1, 4, 6, 5 * MiB) == write_footprint(1 * MiB, 1, 4, 6)


def test_overloaded_is_s3_slowdown() -> None:
    from gateway.s3.errors_map import to_s3_error
    from storage.errors import Overloaded

    err = to_s3_error(Overloaded("retry"), "b", "k")
    assert err.code == "SlowDown" and err.status == 503


def test_small_writes_stop_passing_a_head_that_has_waited_pass_s() -> None:
    """A steady flow of small writes must not keep a large one out for ever: once the head
    has waited pass_s, small ones queue behind it and it gets the budget next."""
    async def main() -> list[str]:
        # the loop's clock stands still but where the test moves it: a loaded machine's
        # stall between two steps must not age the head (a real 50 ms pass did, at load)
        now = [asyncio.get_running_loop().time()]
        vars(asyncio.get_running_loop())["time"] = lambda: now[0]
        budget = UploadBudget(16 * MiB, pass_s=0.05)
        order: list[str] = []
        smalls = [await budget.acquire(1 * MiB) for _ in range(10)]  # 10 MiB in use

        async def write(name: str, n: int) -> None:
            await budget.acquire(n)
            order.append(name)

        big = asyncio.create_task(write("big", 8 * MiB))
        await asyncio.sleep(0)
        young = asyncio.create_task(write("young-small", 1 * MiB))  # passes a young head
        await asyncio.sleep(0)
        now[0] += 0.1  # the head has waited pass_s and more
        late = asyncio.create_task(write("late-small", 1 * MiB))  # head old now: queues
        await asyncio.sleep(0)
        assert order == ["young-small"] and not late.done()
        for n in smalls:
            budget.release(n)
        await asyncio.gather(big, young, late)
        return order

    assert asyncio.run(main()) == ["young-small", "big", "late-small"]


def test_a_refusal_and_a_cancellation_in_one_moment_release_nothing() -> None:
    """The deadline fires and the waiting task is cancelled before it resumes: it was never
    granted, so nothing may be given back (in_use went negative: the limit overrun)."""
    async def main() -> int:
        budget = UploadBudget(10 * MiB)
        held = await budget.acquire(8 * MiB)
        waiter = asyncio.create_task(budget.acquire(5 * MiB, 60))
        await asyncio.sleep(0)
        fut = budget._waiters[0][1]
        budget._expire(fut)  # the deadline ...
        waiter.cancel()  # ... and a cancellation, before the waiter runs again
        with pytest.raises(asyncio.CancelledError):
            await waiter
        budget.release(held)
        return budget.in_use

    assert asyncio.run(main()) == 0


def test_without_a_deadline_a_write_waits_as_long_as_it_takes() -> None:
    """Block volumes and background writers have no client to answer: they wait."""
    async def main() -> int:
        budget = UploadBudget(10 * MiB)
        held = await budget.acquire(8 * MiB)
        waiter = asyncio.create_task(budget.acquire(5 * MiB))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        budget.release(held)
        return await asyncio.wait_for(waiter, 30)

    assert asyncio.run(main()) == 5 * MiB


def test_a_workers_share_of_the_gateways_budget() -> None:
    big = 58 * MiB
    assert worker_share(256 * MiB, 1, big) == 256 * MiB
    assert worker_share(256 * MiB, 2, big) == 128 * MiB
    assert worker_share(256 * MiB, 3, big) * 3 <= 256 * MiB
    assert worker_share(2 * MiB, 4, big) == 2 * MiB  # a setting below one write: all of it


def test_every_workers_share_holds_one_largest_write_beside_a_small_one(tmp_path: Path) -> None:
    """With many workers (one per core on a big host) an equal share of the default would
    be smaller than one 64 MiB PUT's footprint: that upload would take the worker's whole
    share and a 1 MiB PUT behind it would wait for all of it (review12a). The share never
    falls below the configuration's largest write (the archive profile's, 3+3, in what
    `tessera up` writes) plus room for a small write beside it (review12b)."""
    (tmp_path / "tessera.toml").write_text(default_config(tmp_path, 9000, 9100, 9001))
    cfg = load_config(tmp_path / "tessera.toml")  # what `tessera up` writes
    largest = largest_write(cfg)
    seg = cfg.large_segment_size + TAG_BYTES
    for p in cfg.profiles.values():
        assert largest >= write_footprint(seg, -1, p.k, p.width)
    p = cfg.profile()
    small = write_footprint(cfg.segment_size + TAG_BYTES, 1, p.k, p.width, MiB)  # 1 MiB PUT
    for workers in (1, 2, 4, 8, 16, 32, 64):
        share = worker_share(cfg.gateway.upload_budget_bytes, workers, largest)
        assert share >= largest

        async def main(share: int = share) -> int:
            budget = UploadBudget(share)
            held = await budget.acquire(largest)
            got = await asyncio.wait_for(budget.acquire(small), 5)  # no wait for the big one
            budget.release(held)
            return got

        assert asyncio.run(main()) == small


def test_a_share_floor_leaves_room_for_the_largest_small_write() -> None:
    for one_write in (1, 15, 16, 58 * MiB, 72 * MiB + 7):
        share = worker_share(one_write, 64, one_write)  # setting below the floor: all of it
        assert share == one_write
        share = worker_share(1 << 40 if one_write > 1 else 1 << 20, 1 << 30, one_write)
        assert share - one_write >= share // 16  # a small write (<= share/16) fits beside
