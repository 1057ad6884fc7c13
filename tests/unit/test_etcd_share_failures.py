"""The failure edges of etcd commit sharing (storage/metadata/etcd_share.py), on a real Unix
socket without etcd: worker 0 is either the real `CommitServer` over a fake batcher or a
stand-in speaking its frames that can stop answering (as a SIGSTOPped worker 0, whose socket
still takes frames in). What a failure may take down is one commit, never the others on the
connection; a commit goes straight to etcd only when it is known not to have been sent."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from storage.errors import StorageError
from storage.metadata import Item, Txn, etcd_share
from storage.metadata.etcd_share import HEAD, CommitServer, SharedCommits

Answer = tuple[bool, dict[bytes, Item | None]]


class Direct:
    """The worker's own batcher: records what it was given, and succeeds."""

    def __init__(self) -> None:
        self.txns: list[Txn] = []

    async def __call__(self, txn: Txn, reads: tuple[bytes, ...]) -> Answer:
        self.txns.append(txn)
        return True, {}


class Held:
    """Worker 0's batcher: each commit (by its first put's key) waits until released."""

    def __init__(self) -> None:
        self.entered: dict[bytes, asyncio.Event] = {}
        self.release: dict[bytes, asyncio.Event] = {}
        self.dropped: dict[bytes, asyncio.Event] = {}  # cancelled before its answer

    def _key(self, key: bytes) -> tuple[asyncio.Event, asyncio.Event]:
        return (self.entered.setdefault(key, asyncio.Event()),
                self.release.setdefault(key, asyncio.Event()))

    async def __call__(self, txn: Txn, reads: tuple[bytes, ...]) -> Answer:
        key = next(iter(txn.puts))
        entered, release = self._key(key)
        entered.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            self.dropped.setdefault(key, asyncio.Event()).set()
            raise
        return True, {}

    async def reached(self, key: bytes) -> None:
        await asyncio.wait_for(self._key(key)[0].wait(), 30)

    def let_go(self, key: bytes) -> None:
        self._key(key)[1].set()


class StandIn:
    """Worker 0 speaking the share frames: answers pings while `awake`; holds commits, or
    answers them with `answer` (a frame's last three fields)."""

    def __init__(self) -> None:
        self.awake = True
        self.answer: list[Any] | None = None
        self.frames: list[list[Any]] = []
        self.took = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                (n,) = HEAD.unpack(await reader.readexactly(HEAD.size))
                frame = msgpack.unpackb(await reader.readexactly(n), strict_map_key=False)
                if frame == [0]:
                    if self.awake:
                        writer.write(_frame([0]))
                    continue
                self.frames.append(frame)
                self.took.set()
                if self.answer is not None:
                    writer.write(_frame([frame[0], *self.answer]))
        writer.close()


def _frame(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return HEAD.pack(len(body)) + body


def put(key: bytes, size: int = 1) -> Txn:
    return Txn(compares={key: 0}, puts={key: b"v" * size})


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "txn.sock"


@pytest.fixture
async def held(sock: Path) -> AsyncIterator[Held]:
    batcher = Held()
    server = CommitServer(batcher)
    await server.start(sock)
    try:
        yield batcher
    finally:
        for release in batcher.release.values():
            release.set()
        await server.close()


@pytest.fixture
async def stand_in(sock: Path) -> AsyncIterator[StandIn]:
    w0 = StandIn()
    server = await asyncio.start_unix_server(w0.serve, str(sock))
    try:
        yield w0
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def shared(sock: Path) -> AsyncIterator[tuple[SharedCommits, Direct]]:
    direct = Direct()
    s = SharedCommits(sock, direct, StorageError)
    try:
        yield s, direct
    finally:
        await s.close()


async def test_a_commit_timing_out_fails_alone(
        held: Held, shared: tuple[SharedCommits, Direct],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit without an answer within FORWARD_TIMEOUT_S fails "outcome unknown"; worker
    0 drops it then (not sent to etcd yet, it never will be); another waiting on the same
    connection still gets its answer, and nothing goes direct."""
    s, direct = shared
    monkeypatch.setattr(etcd_share, "FORWARD_TIMEOUT_S", 0.2)
    a = asyncio.ensure_future(s.run(put(b"a"), ()))
    await held.reached(b"a")
    monkeypatch.setattr(etcd_share, "FORWARD_TIMEOUT_S", 60.0)
    b = asyncio.ensure_future(s.run(put(b"b"), ()))
    await held.reached(b"b")
    with pytest.raises(StorageError, match="no answer .*; outcome unknown"):
        await a
    await asyncio.wait_for(held.dropped.setdefault(b"a", asyncio.Event()).wait(), 10)
    held.let_go(b"b")
    assert await b == (True, {})
    assert (s.forwarded, s.direct, direct.txns) == (2, 0, [])


async def test_a_commit_too_big_to_forward_goes_direct_alone(
        held: Held, shared: tuple[SharedCommits, Direct],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit whose frame is over MAX_FRAME is sent by its own worker (where the batcher
    refuses it if etcd would); the connection, and the commit waiting on it, are untouched."""
    s, direct = shared
    monkeypatch.setattr(etcd_share, "MAX_FRAME", 64 * 1024)
    a = asyncio.ensure_future(s.run(put(b"a"), ()))
    await held.reached(b"a")
    big = put(b"big", 100 * 1024)
    assert await s.run(big, ()) == (True, {})
    assert direct.txns == [big]
    held.let_go(b"a")
    assert await a == (True, {})
    assert (s.forwarded, s.direct) == (1, 1)


async def test_a_stopped_worker_0_is_left_within_a_ping(
        stand_in: StandIn, shared: tuple[SharedCommits, Direct],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker 0 stops answering with a commit in its hands: that commit fails "outcome
    unknown" once a ping went unanswered (not after FORWARD_TIMEOUT_S) and only once its
    take-in deadline passed (a worker 0 resuming refuses it); the next commits go direct
    (the failed one is never resent); when worker 0 answers again, commits go to it again."""
    s, direct = shared
    monkeypatch.setattr(etcd_share, "PING_S", 1.0)  # (a loaded box: pongs in time)
    monkeypatch.setattr(etcd_share, "CHECK_S", 0.05)
    monkeypatch.setattr(etcd_share, "AWAY_S", 0.0)
    a = asyncio.ensure_future(s.run(put(b"a"), ()))
    await asyncio.wait_for(stand_in.took.wait(), 30)
    stand_in.awake = False
    with pytest.raises(StorageError, match="did not answer a ping .*; outcome unknown"):
        await asyncio.wait_for(a, 20)  # (FORWARD_TIMEOUT_S is 35 s)
    assert time.monotonic() >= stand_in.frames[0][5]  # its take-in deadline
    assert await s.run(put(b"b"), ()) == (True, {})
    assert [t.puts for t in direct.txns] == [{b"b": b"v"}]
    stand_in.awake = True
    stand_in.answer = [True, [], None]
    while s._writer is None:  # noqa: SLF001
        await s.run(put(b"c"), ())  # direct, starting a reconnection in the background
        if s._connecting is not None:  # noqa: SLF001
            await s._connecting  # noqa: SLF001
    assert await s.run(put(b"d"), ()) == (True, {})
    assert [f[2] for f in stand_in.frames] == [{b"a": b"v"}, {b"d": b"v"}]
    assert s.forwarded == 2


async def test_a_commit_worker_0_took_in_too_late_goes_direct(
        stand_in: StandIn, shared: tuple[SharedCommits, Direct]) -> None:
    """Worker 0 refused a commit unsent (taken in after its deadline): known not applied,
    so its worker sends it itself, once."""
    s, direct = shared
    stand_in.answer = [None, None, ["unsent", "taken in after its deadline"]]
    assert await s.run(put(b"a"), ()) == (True, {})
    assert [t.puts for t in direct.txns] == [{b"a": b"v"}]
    assert (s.forwarded, s.direct) == (1, 1)
