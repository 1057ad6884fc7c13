"""A streaming write's full segments are coded into kept frame buffers (`pipeline.
FRAME_BUFFERS`): one is lent again only once no frame of it is referred to, never while a
send may still read it, and the idle ones are let go after a quiet spell (`IdleTrim`)."""

from __future__ import annotations

import asyncio
import mmap
import os

import pytest

from storage import pipeline
from storage.buffers import IdleTrim, LendingPools
from storage.crypto.aead import SegmentCipher
from storage.erasure import ErasureCodec
from storage.pipeline import StripeCodec

SEGMENT = 65536


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch) -> LendingPools:
    fresh = LendingPools(4 * 1024 * 1024)
    monkeypatch.setattr(pipeline, "FRAME_BUFFERS", fresh, raising=False)
    return fresh


def _codec() -> StripeCodec:
    return StripeCodec(SegmentCipher(os.urandom(32)), ErasureCodec(4, 2), "bucket/key/v1", 1,
                       os.urandom(16), SEGMENT)


def test_full_segments_reuse_a_kept_buffer_only_once_its_frames_are_gone(
        pools: LendingPools) -> None:
    codec = _codec()
    headers = codec.headers()
    first = codec.encode_frames(headers, 0, False, os.urandom(SEGMENT))
    owner = first[0].obj  # type: ignore[union-attr]
    assert isinstance(owner, mmap.mmap)  # a kept mapping, not a fresh heap buffer
    assert all(f.obj is owner for f in first)  # type: ignore[union-attr]
    sent = [bytes(f) for f in first]
    held = codec.encode_frames(headers, 1, False, os.urandom(SEGMENT))
    assert held[0].obj is not owner  # type: ignore[union-attr]  # first's frames still held
    assert [bytes(f) for f in first] == sent  # ... so their bytes were not rewritten
    address = id(owner)
    del first, owner, held
    again = codec.encode_frames(headers, 2, False, os.urandom(SEGMENT))
    assert id(again[0].obj) == address  # type: ignore[union-attr]  # let go: lent again
    assert pools.kept == 2 * len(again[0].obj)  # type: ignore[union-attr]


def test_short_segments_and_one_segment_slots_are_not_kept(pools: LendingPools) -> None:
    codec = _codec()
    headers = codec.headers()
    short = codec.encode_frames(headers, 0, True, os.urandom(SEGMENT - 1))
    assert type(short[0].obj) is bytearray  # type: ignore[union-attr]
    slots = codec.encode_slots(headers, [os.urandom(SEGMENT)])
    assert type(slots[0].view.obj) is bytearray
    assert pools.kept == 0


def test_a_pool_keeps_at_most_its_bytes_and_trim_lets_the_idle_ones_go() -> None:
    pools = LendingPools(3 * 1000)
    held = [pools.lend(1000) for _ in range(3)]
    assert all(b is not None for b in held) and pools.lend(1000) is None  # all lent out
    held.pop()
    pools.trim()  # the idle one goes; the two lent stay kept
    assert pools.kept == 2000
    del held
    pools.trim()
    assert pools.kept == 0


def test_one_byte_cap_holds_across_block_sizes() -> None:
    """Each profile and segment size has its own frame-set size: the cap is for all of them
    together, and a new size takes the room of idle blocks of other sizes."""
    pools = LendingPools(3 * 1000)
    held = [pools.lend(1000) for _ in range(3)]
    assert pools.lend(500) is None  # all the room is lent out: the caller allocates
    held.pop()  # one idle 1000-byte block
    small = pools.lend(500)
    assert small is not None and len(small) == 500
    assert pools.kept == 2500  # the idle 1000 went to make room
    assert pools.lend(3001) is None  # larger than the cap: never kept
    del held
    again = pools.lend(1000)  # an idle one of this size is lent again
    assert again is not None and pools.kept == 2500


async def test_idle_trim_runs_once_no_user_was_active_for_its_spell() -> None:
    trimmed = asyncio.Event()
    quiet = IdleTrim(trimmed.set, 0.01)
    quiet.begin()
    quiet.begin()
    quiet.end()
    assert quiet.active == 1 and quiet._handle is None  # one user still active: none due
    quiet.end()
    async with asyncio.timeout(30):
        await trimmed.wait()
    assert quiet.active == 0


async def test_idle_trim_waits_its_spell_after_the_last_user_ended() -> None:
    """Uploads end at 0.0 and 0.23 (the second began at 0.2): the trim is due at 0.48,
    not at 0.25 (the first idle moment's timer is moved, not obeyed). The loop's clock is
    set by hand and the due timer run directly: no sleeps."""
    loop = asyncio.get_running_loop()
    now = [1000.0]
    loop.time = lambda: now[0]  # type: ignore[method-assign]
    trims: list[float] = []
    quiet = IdleTrim(lambda: trims.append(now[0]), 0.25)
    try:
        quiet.begin()
        quiet.end()  # t=0: idle, a timer due at 0.25
        now[0] += 0.2
        quiet.begin()
        now[0] += 0.03
        quiet.end()  # t=0.23: the last end
        now[0] = 1000.25
        handle = quiet._handle
        assert handle is not None and handle.when() == pytest.approx(1000.25)
        handle._run()  # the timer fires at 0.25: only 0.02 s since the last end
        assert trims == []
        handle = quiet._handle
        assert handle is not None and handle.when() == pytest.approx(1000.48)
        now[0] = 1000.48
        handle._run()
        assert trims == [pytest.approx(1000.48)]
    finally:
        if quiet._handle is not None:
            quiet._handle.cancel()
        del loop.time  # the loop's own clock again


def test_idle_trim_still_trims_after_the_loop_that_set_its_timer_closed() -> None:
    """A process that runs several loops (tools, tests): the first loop closes with the
    timer pending; a later loop's idle moment must still trim."""
    done: list[asyncio.Event] = []  # the running loop's event, set by the trim
    quiet = IdleTrim(lambda: done[-1].set(), 0.01)

    async def upload() -> None:
        done.append(asyncio.Event())
        quiet.begin()
        quiet.end()

    asyncio.run(upload())  # closes its loop, the timer never fired
    assert not done[0].is_set()

    async def upload_and_wait() -> None:
        await upload()
        async with asyncio.timeout(30):  # a bound on a hang, not a synchronization
            await done[-1].wait()

    asyncio.run(upload_and_wait())
