"""The failure edges of etcd commit sharing (storage/metadata/etcd_share.py), on a real Unix
socket without etcd: worker 0 is the real `CommitServer` over a fake batcher, or over the
real `TxnBatcher` in a thread and event loop of its own (`Worker0`: its loop can be stopped,
as by SIGSTOP, or stalled inside a request, as on a loaded host), or a stand-in speaking its
frames that can stop answering (as a SIGSTOPped worker 0, whose socket still takes frames
in). What a failure may take down is one commit, never the others on the connection; a
commit goes straight to etcd only when it is known not to have been sent, and none is sent
to etcd after its caller could have been told it failed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from storage.errors import StorageError
from storage.metadata import Item, Txn, etcd_share
from storage.metadata.etcd_batch import TxnBatcher, Wanted
from storage.metadata.etcd_share import HEAD, CommitServer, SharedCommits
from storage.metadata.etcdpb import etcd_wire_pb2 as pb

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
        self.wanted: dict[bytes, Any] = {}  # whether worker 0 still wants it sent

    def _key(self, key: bytes) -> tuple[asyncio.Event, asyncio.Event]:
        return (self.entered.setdefault(key, asyncio.Event()),
                self.release.setdefault(key, asyncio.Event()))

    async def __call__(self, txn: Txn, reads: tuple[bytes, ...], wanted: Any) -> Answer:
        key = next(iter(txn.puts))
        self.wanted[key] = wanted
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
    answers them with `answer` (a frame's last three fields); closes the connection when it
    takes in a commit putting `close_on`."""

    def __init__(self) -> None:
        self.awake = True
        self.answer: list[Any] | None = None
        self.close_on = b""
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
                if self.close_on in frame[2]:
                    break
                if self.answer is not None:
                    writer.write(_frame([frame[0], *self.answer]))
        writer.close()


class Worker0:
    """Worker 0 as its own process would be: the real CommitServer over the real TxnBatcher,
    in a thread with its own event loop. "etcd" records each request it is sent; one carrying
    `held` waits for `release()`, then, if `stall`, blocks its loop until `resume()` (a
    CPU-bound stretch on a loaded host). `stop()` blocks its loop between two callbacks
    until `resume()` (SIGSTOP)."""

    def __init__(self, sock: Path) -> None:
        self.sent: list[bytes] = []
        self.held = b""
        self.stall = False
        self._sock = sock
        self._ready, self._go = threading.Event(), threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._done: asyncio.Event | None = None
        self.batcher: TxnBatcher | None = None
        self.server: CommitServer | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()))

    async def _etcd(self, body: bytes, still: Wanted | None = None) -> pb.TxnResponse:
        self.sent.append(bytes(body))
        if self.held and self.held in body:
            assert self._release is not None
            await self._release.wait()
            if self.stall:
                self._go.wait()  # (blocking: this loop stalls)
        nested = [op for op in pb.TxnRequest.FromString(body).success
                  if op.HasField("request_txn")]
        return pb.TxnResponse(succeeded=True, responses=[
            pb.ResponseOp(response_txn=pb.TxnResponse(succeeded=True)) for _ in nested])

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._release, self._done = asyncio.Event(), asyncio.Event()
        self.batcher = TxnBatcher(self._etcd)
        self.server = CommitServer(self.batcher.run)
        await self.server.start(self._sock)
        self._ready.set()
        await self._done.wait()
        await self.server.close()

    async def start(self) -> None:
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)

    def queued(self) -> int:
        assert self.batcher is not None
        return len(self.batcher._queue)  # noqa: SLF001 (read across threads: a poll)

    def busy(self) -> bool:
        assert self.server is not None
        return bool(self.server._tasks)  # noqa: SLF001

    def release(self) -> None:
        assert self._loop is not None and self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)

    def stop(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._go.wait)

    def resume(self) -> None:
        self._go.set()

    async def finish(self) -> None:
        self._go.set()
        if self._loop is not None:
            assert self._release is not None and self._done is not None
            self._loop.call_soon_threadsafe(self._release.set)
            self._loop.call_soon_threadsafe(self._done.set)
        await asyncio.to_thread(self._thread.join)


async def _until(done: Any) -> None:
    """Poll a condition another thread (or process) makes true; bounded."""
    async with asyncio.timeout(30):
        while not done():
            await asyncio.sleep(0.01)


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
async def worker_0(sock: Path) -> AsyncIterator[Worker0]:
    w0 = Worker0(sock)
    try:
        await w0.start()
        yield w0
    finally:
        await w0.finish()


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
    0 no longer wants it sent by then (its batcher drops it if not sent yet); another waiting
    on the same connection still gets its answer, and nothing goes direct."""
    s, direct = shared
    monkeypatch.setattr(etcd_share, "FORWARD_TIMEOUT_S", 0.2)
    a = asyncio.ensure_future(s.run(put(b"a"), ()))
    await held.reached(b"a")
    monkeypatch.setattr(etcd_share, "FORWARD_TIMEOUT_S", 60.0)
    b = asyncio.ensure_future(s.run(put(b"b"), ()))
    await held.reached(b"b")
    with pytest.raises(StorageError, match="no answer .*; outcome unknown"):
        await a
    assert not held.wanted[b"a"]() and held.wanted[b"b"]()
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
    """Worker 0 stops answering with a commit in its hands: the next commits go direct once a
    ping went unanswered (within CHECK_S + PING_S, not FORWARD_TIMEOUT_S), while that commit
    keeps waiting for its answer (worker 0 may only be slow) and fails "outcome unknown" at
    its own FORWARD_TIMEOUT_S, never resent; when worker 0 answers again, commits go to it
    again."""
    s, direct = shared
    monkeypatch.setattr(etcd_share, "PING_S", 1.0)  # (a loaded box: pongs in time)
    monkeypatch.setattr(etcd_share, "CHECK_S", 0.05)
    monkeypatch.setattr(etcd_share, "AWAY_S", 0.0)
    monkeypatch.setattr(etcd_share, "FORWARD_TIMEOUT_S", 4.0)
    a = asyncio.ensure_future(s.run(put(b"a"), ()))
    await asyncio.wait_for(stand_in.took.wait(), 30)
    stand_in.awake = False
    await _until(lambda: s._link is None)  # noqa: SLF001 (the ping went unanswered)
    assert await s.run(put(b"b"), ()) == (True, {})  # direct, a still waiting
    assert [t.puts for t in direct.txns] == [{b"b": b"v"}] and not a.done()
    with pytest.raises(StorageError, match=r"no answer within 4 s \(worker 0 did not answer "
                                           r"a ping within 1 s\); outcome unknown"):
        await asyncio.wait_for(a, 20)
    stand_in.awake = True
    stand_in.answer = [True, [], None]
    while s._link is None:  # noqa: SLF001
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


async def test_a_commit_on_a_connection_worker_0_closed_fails_only_after_its_take_in_deadline(
        stand_in: StandIn, shared: tuple[SharedCommits, Direct],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """review21b (finding 3): worker 0 closes the connection (gone) just after a commit was
    sent: its caller is told "outcome unknown" at once, but only after the commit's take-in
    deadline, past which no worker 0 takes it in (so none sends it after the caller was
    told); the next commits go direct."""
    s, direct = shared
    monkeypatch.setattr(etcd_share, "PING_S", 1.5)
    monkeypatch.setattr(etcd_share, "REQUEST_TIMEOUT_S", 0.5)  # (its wait: the take-in's)
    stand_in.close_on = b"a"
    with pytest.raises(StorageError, match="worker 0 closed the connection; outcome unknown"):
        await asyncio.wait_for(s.run(put(b"a"), ()), 20)
    assert time.monotonic() >= stand_in.frames[0][5], "told before its take-in deadline"
    assert await s.run(put(b"b"), ()) == (True, {})
    assert [t.puts for t in direct.txns] == [{b"b": b"v"}]


async def _x1_and_x2_queued(worker_0: Worker0, sock: Path
                           ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
    """A sender's raw frames: X1 (held in flight by "etcd") and X2 queued behind it, X2's
    give-up time so close that worker 0 wants it sent only for 0.3 s more (by `send_by`)."""
    reader, writer = await asyncio.open_unix_connection(str(sock))
    now = time.monotonic()
    worker_0.held = b"X1"
    writer.write(_frame([1, {b"X1": 0}, {b"X1": b"v"}, [], [], now + 60, now + 60]))
    await _until(lambda: any(b"X1" in b for b in worker_0.sent))
    now = time.monotonic()
    send_by = now + 0.3
    writer.write(_frame([2, {b"X2": 0}, {b"X2": b"v"}, [], [], now + 60,
                         send_by + etcd_share.give_up_margin()]))
    await _until(lambda: worker_0.queued() == 1)  # X2 behind X1
    return reader, writer, send_by


async def _answers(reader: asyncio.StreamReader) -> dict[int, list[Any]]:
    """Worker 0's answers to X1 and X2, by request id."""
    got: dict[int, list[Any]] = {}
    async with asyncio.timeout(30):
        async for frame in etcd_share._frames(reader, etcd_share.MAX_FRAME):
            got[frame[0]] = frame
            if len(got) == 2:
                return got
    raise AssertionError(f"worker 0 answered only {sorted(got)}")


async def test_a_commit_queued_in_a_stopped_worker_0_is_not_sent_after_its_caller_was_told(
        worker_0: Worker0, sock: Path) -> None:
    """review21b (finding 1): worker 0 has X1 in flight and X2 queued behind it when its loop
    stops (as SIGSTOP) past X2's give-up time, when X2's sender tells its caller "outcome
    unknown" (test_a_commit_timing_out_fails_alone). When worker 0 resumes (X1's answer
    arriving, as its gRPC reply would), X2 must not go to etcd: its caller's retry may
    already have applied, or a later commit of that caller been acknowledged."""
    reader, writer, send_by = await _x1_and_x2_queued(worker_0, sock)
    try:
        worker_0.stop()
        await _until(lambda: time.monotonic() > send_by)  # (a clock condition)
        worker_0.release()  # X1's reply, read on resume
        worker_0.resume()
        got = await _answers(reader)
    finally:
        writer.close()
    assert not any(b"X2" in b for b in worker_0.sent), "X2 sent after its caller was told"
    assert got[1][1] is True and got[2][3][0] == "unsent", got  # (X2's sender sends it)


async def test_a_commit_queued_in_a_worker_0_stalled_past_its_give_up_is_not_sent(
        worker_0: Worker0, sock: Path) -> None:
    """review21b (finding 4): worker 0's loop stalls inside X1's request (CPU-bound on a
    loaded host) past X2's give-up time, X2 queued behind X1: the stall ends with the
    batcher's next flight already due, before any timer of worker 0 fires, so a drop by
    timer would come too late. X2 is checked when taken and not sent."""
    worker_0.stall = True
    reader, writer, send_by = await _x1_and_x2_queued(worker_0, sock)
    try:
        worker_0.release()  # X1's reply comes, and worker 0's loop stalls on it
        await _until(lambda: time.monotonic() > send_by)
        worker_0.resume()
        got = await _answers(reader)
    finally:
        writer.close()
    assert not any(b"X2" in b for b in worker_0.sent), "X2 sent after its caller was told"
    assert got[1][1] is True and got[2][3][0] == "unsent", got  # (X2's sender sends it)


async def test_a_slow_worker_0_still_answers_the_commits_it_was_sent(
        worker_0: Worker0, shared: tuple[SharedCommits, Direct],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """review21b (finding 2): worker 0's loop stalls longer than PING_S inside a commit's
    request (a loaded host), so a ping goes unanswered: the next commits go direct, but the
    commit it was sent still gets worker 0's true answer (not "outcome unknown" while worker
    0 applies it: a client's retry would make a second version, or a 412 on its own
    If-None-Match: * PUT)."""
    s, direct = shared
    monkeypatch.setattr(etcd_share, "PING_S", 1.0)
    monkeypatch.setattr(etcd_share, "CHECK_S", 0.05)
    caplog.set_level(logging.WARNING, logger="tessera.metadata.etcd")
    assert await s.run(put(b"warm"), ()) == (True, {})
    worker_0.held, worker_0.stall = b"K-slow", True
    k = asyncio.ensure_future(s.run(put(b"K-slow"), ()))
    await _until(lambda: any(b"K-slow" in b for b in worker_0.sent))
    worker_0.release()  # etcd answers, and worker 0's loop stalls on it
    await _until(lambda: "did not answer a ping" in caplog.text)
    assert await s.run(put(b"b"), ()) == (True, {})  # the next goes direct meanwhile
    assert [t.puts for t in direct.txns] == [{b"b": b"v"}]
    worker_0.resume()
    assert await asyncio.wait_for(k, 30) == (True, {})
    assert sum(b"K-slow" in b for b in worker_0.sent) == 1 and s.forwarded == 2


async def test_an_answer_into_a_connection_its_sender_closed_is_no_warning(
        sock: Path, caplog: pytest.LogCaptureFixture) -> None:
    """review21b (finding 5): worker 0 (its own thread and loop) writes a commit's answer
    into a connection its sender has closed meanwhile (a sender that gave up on it, or is
    gone): "Broken pipe" is how such a connection ends, logged at debug, not a warning per
    abandoned connection."""
    caplog.set_level(logging.DEBUG, logger="tessera.metadata.etcd")
    entered, go = threading.Event(), threading.Event()
    loop: dict[str, Any] = {}

    async def run(txn: Txn, reads: tuple[bytes, ...], wanted: Any = None) -> Answer:
        entered.set()
        go.wait()  # (blocking: its loop stalls, and answers as it resumes)
        return True, {}

    async def main() -> None:
        loop["stop"] = asyncio.Event()
        server = CommitServer(run)
        await server.start(sock)
        loop["loop"] = asyncio.get_running_loop()
        await loop["stop"].wait()
        await server.close()

    thread = threading.Thread(target=lambda: asyncio.run(main()))
    thread.start()
    try:
        await _until(lambda: "loop" in loop)
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(_frame([1, {b"a": 0}, {b"a": b"v"}, [], [], time.monotonic() + 60,
                             time.monotonic() + 60]))
        assert await asyncio.to_thread(entered.wait, 30)
        writer.close()  # the sender goes, worker 0 stalled with its commit
        await writer.wait_closed()
        go.set()
        await _until(lambda: "connection" in caplog.text)
    finally:
        go.set()
        if "loop" in loop:
            loop["loop"].call_soon_threadsafe(loop["stop"].set)
        await asyncio.to_thread(thread.join)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
