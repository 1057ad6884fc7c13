"""The lean shard fetcher's connection (`storage.shards.fetch._Conn`) wakes its reader only
for what the reader waits for (the head, a whole frame, the end, an error), not for every
receive of a block that arrives in pieces; and bytes that arrive without completing
anything still keep a read from timing out (the read timeout means "no byte for that
long")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storage.buffers import BufferPool
from storage.shards import fetch
from storage.shards.assembler import FrameAssembler
from storage.shards.fetch import _Conn
from tests.contract.node_harness import make_shard


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _answer(frames: int = 1) -> tuple[_Conn, bytes]:
    """A connection with a request started for a shard of `frames` 64 KiB frames, and the
    bytes of the node's whole answer (head and body)."""
    _, h, _, body = make_shard(index=1, frames=frames, block_size=65536, last=None)
    conn = _Conn()
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    conn.start(b"GET ...", FrameAssembler(h, 0, frames, BufferPool()))
    return conn, f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def _receive(conn: _Conn, data: bytes) -> None:
    """What the transport does for one `recv_into`: fill `get_buffer`, report it."""
    while data:
        buf = conn.get_buffer(-1)
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        conn.buffer_updated(n)
        data = data[n:]


async def _settle() -> None:
    for _ in range(5):  # let any callbacks a wake-up scheduled run
        await asyncio.sleep(0)


async def test_a_block_in_pieces_wakes_the_reader_once() -> None:
    conn, answer = _answer()
    wakes = 0
    real = conn._wake

    def counting() -> None:
        nonlocal wakes
        if conn._waiter is not None and not conn._waiter.done():
            wakes += 1
        real()

    conn._wake = counting  # type: ignore[method-assign]
    head_end = answer.index(b"\r\n\r\n") + 4
    _receive(conn, answer[:head_end + 100])  # the head and a little of the body
    waiting = asyncio.ensure_future(conn.wait(30))
    await _settle()
    for at in range(head_end + 100, len(answer) - 1000, 7000):  # most of the block
        _receive(conn, answer[at:min(at + 7000, len(answer) - 1000)])
        await _settle()
        assert not waiting.done()
    assert wakes == 0
    _receive(conn, answer[len(answer) - 1000:])  # the frame's last bytes
    await asyncio.wait_for(waiting, 30)
    assert wakes == 1 and conn.finished and len(conn._asm.ready) == 1  # type: ignore[union-attr]


class _Clock:
    """A clock the fake `_sleep` advances: no real time passes in these tests."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 100.0
        monkeypatch.setattr(fetch, "_clock", lambda: self.now)


def _timed_out(monkeypatch: pytest.MonkeyPatch, clock: _Clock, conn: _Conn, at: float,
               data: bytes) -> list[float]:
    """Make every `_sleep` time out, the first with `data` arriving `at` seconds into it;
    return the timeouts asked for, in order."""
    sleeps: list[float] = []

    async def sleep(self: Any, timeout_s: float) -> None:
        sleeps.append(timeout_s)
        if len(sleeps) == 1:
            clock.now += at
            _receive(conn, data)
            clock.now += timeout_s - at
        else:
            clock.now += timeout_s
        raise TimeoutError

    monkeypatch.setattr(_Conn, "_sleep", sleep)
    return sleeps


async def test_bytes_that_complete_nothing_still_count_against_the_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes 3 s into a 5 s wait keep the read alive until 5 s after them: the second
    sleep is the 3 s left, not another whole timeout."""
    clock = _Clock(monkeypatch)
    conn, answer = _answer(frames=2)
    head_end = answer.index(b"\r\n\r\n") + 4
    _receive(conn, answer[:head_end + 100])
    sleeps = _timed_out(monkeypatch, clock, conn, 3, answer[head_end + 100:head_end + 5000])
    with pytest.raises(TimeoutError):
        await conn.wait(5)
    assert sleeps == [5, 3]  # timed out 5 s after the last byte, when nothing more came


async def test_a_node_that_stalls_after_its_head_times_out_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The head arrives 2 s into the wait (it completes no frame, so it wakes nobody) and
    then nothing: the read times out 5 s after the head, not 5 s after a second sleep."""
    clock = _Clock(monkeypatch)
    conn, answer = _answer(frames=2)
    head_end = answer.index(b"\r\n\r\n") + 4
    sleeps = _timed_out(monkeypatch, clock, conn, 2, answer[:head_end])
    with pytest.raises(TimeoutError):
        await conn.wait(5)
    assert sleeps == [5, 2] and clock.now == 107


async def test_an_answer_done_as_the_timeout_fires_is_not_a_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The last bytes arrive in the same loop pass as the deadline: the wait returns."""
    _Clock(monkeypatch)
    conn, answer = _answer(frames=1)

    async def sleep(self: Any, timeout_s: float) -> None:
        _receive(conn, answer)  # everything, then the timeout wins the race to the reader
        raise TimeoutError

    monkeypatch.setattr(_Conn, "_sleep", sleep)
    await conn.wait(5)
    assert conn.finished
