"""No commit forwarded to worker 0 (storage/metadata/etcd_share.py) can still apply in etcd
after its sender answered its caller: worker 0 sends it only while the request's whole
deadline in etcd ends before its sender's give-up time (a member may hold a request that
long before it applies it), and a worker that closes waits for the answers of the commits it
sent. Worker 0 is the real CommitServer over the real TxnBatcher, and etcd a stand-in
member that applies a request it is made to hold at the end of its deadline (the latest
etcd may); no etcd process."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.errors import StorageError
from storage.metadata import Item, Txn, etcd_share
from storage.metadata.etcd_batch import TxnBatcher, Wanted
from storage.metadata.etcd_share import HEAD, MAX_FRAME, CommitServer, SharedCommits
from storage.metadata.etcdpb import etcd_wire_pb2 as pb

Answer = tuple[bool, dict[bytes, Item | None]]


class Member:
    """etcd: records when each request applied (by the keys it carries). A request carrying
    `slow` is held for its whole deadline (etcd_share.REQUEST_TIMEOUT_S, read when it
    arrives) and applies at its end (recorded as then: the latest a member may); one
    carrying `held` waits for `go` first."""

    def __init__(self) -> None:
        self.applied: list[tuple[bytes, float]] = []
        self.slow = b""
        self.held = b""
        self.go = asyncio.Event()
        self.got: list[bytes] = []

    async def call(self, body: bytes, still: Wanted | None = None) -> pb.TxnResponse:
        self.got.append(bytes(body))
        if self.held and self.held in body:
            await self.go.wait()
        at = time.monotonic()
        if self.slow and self.slow in body:
            at += etcd_share.REQUEST_TIMEOUT_S
            await asyncio.sleep(etcd_share.REQUEST_TIMEOUT_S)  # (the member's own timing)
        self.applied.append((bytes(body), at))
        nested = [op for op in pb.TxnRequest.FromString(body).success
                  if op.HasField("request_txn")]
        return pb.TxnResponse(succeeded=True, responses=[
            pb.ResponseOp(response_txn=pb.TxnResponse(succeeded=True)) for _ in nested])

    def applied_at(self, key: bytes) -> list[float]:
        return [at for body, at in self.applied if key in body]


class Direct:
    """The sending worker's own batcher: applies at once, and records when."""

    def __init__(self, member: Member) -> None:
        self.member = member

    async def __call__(self, txn: Txn, reads: tuple[bytes, ...]) -> Answer:
        key = next(iter(txn.puts))
        self.member.applied.append((b"direct " + key, time.monotonic()))
        return True, {}


def put(key: bytes) -> Txn:
    return Txn(compares={key: 0}, puts={key: b"v"})


async def _told(s: SharedCommits, key: bytes) -> tuple[Answer | StorageError, float]:
    """What `run` told its caller, and when."""
    try:
        answer: Answer | StorageError = await s.run(put(key), ())
    except StorageError as exc:
        answer = exc
    return answer, time.monotonic()


async def _until(done: object) -> None:
    """Poll a condition (bounded)."""
    async with asyncio.timeout(30):
        while not done():  # type: ignore[operator]
            await asyncio.sleep(0.01)


@pytest.fixture
async def sharing(tmp_path: Path) -> AsyncIterator[tuple[Member, TxnBatcher, SharedCommits]]:
    member = Member()
    batcher = TxnBatcher(member.call)
    server = CommitServer(batcher.run)
    sock = tmp_path / "txn.sock"
    await server.start(sock)
    s = SharedCommits(sock, Direct(member), StorageError)
    try:
        yield member, batcher, s
    finally:
        member.go.set()
        await s.close()
        await server.close()
        await batcher.close()


async def test_a_commit_is_sent_only_while_its_requests_deadline_ends_before_its_give_up(
        sharing: tuple[Member, TxnBatcher, SharedCommits],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """final-s21: worker 0 sent a commit until 1 s before its sender's give-up, and etcd may
    hold the request for its whole deadline (10 s): an unconditional write could apply after
    its caller was told "outcome unknown". Now one taken for a request later than that
    deadline (and STALL_S) before the give-up goes back unsent (its sender sends it itself,
    once), and one taken in time is answered by worker 0 before the give-up."""
    member, batcher, s = sharing
    monkeypatch.setattr(etcd_share, "REQUEST_TIMEOUT_S", 1.5, raising=False)
    monkeypatch.setattr(etcd_share, "STALL_S", 0.1, raising=False)
    monkeypatch.setattr(etcd_share, "FORWARD_TIMEOUT_S", 2.0)
    member.slow = b"X"
    # in time: worker 0 takes it at once, etcd holds it its whole deadline, the answer
    # comes before the give-up
    answer, told = await _told(s, b"X0")
    assert answer == (True, {}) and s.forwarded == 1 and s.direct == 0
    assert member.applied_at(b"X0") and max(member.applied_at(b"X0")) <= told
    # late: worker 0's own commit W holds its batcher until X1 is 0.6 s old; X1 is taken
    # then, with 1.4 s to its give-up, less than its request's deadline
    member.held = b"W"
    own = asyncio.get_running_loop().create_task(batcher.run(put(b"W"), ()))
    await _until(lambda: any(b"W" in b for b in member.got))
    sent = time.monotonic()
    telling = asyncio.get_running_loop().create_task(_told(s, b"X1"))
    await _until(lambda: time.monotonic() >= sent + 0.6)
    member.go.set()
    answer, told = await telling
    assert await own == (True, {})
    await batcher.close()  # (every request sent to "etcd" has applied)
    late = [at for at in member.applied_at(b"X1") if at > told]
    assert not late, f"X1 applied {late[0] - told:.2f} s after its caller was told {answer!r}"
    assert answer == (True, {}), answer  # sent once, by its sender
    assert [b for b, _ in member.applied if b"X1" in b] == [b"direct X1"]


async def test_a_closing_worker_waits_for_worker_0s_answers(
        sharing: tuple[Member, TxnBatcher, SharedCommits],
        caplog: pytest.LogCaptureFixture) -> None:
    """final-s21: a worker closing told its waiting commits "outcome unknown" at once while
    worker 0 still sent them; now it waits for their answers (within their own timeout),
    and sends new ones itself meanwhile."""
    member, batcher, s = sharing
    member.held = b"X"
    caplog.set_level(logging.INFO, logger="tessera.metadata.etcd")
    telling = asyncio.get_running_loop().create_task(_told(s, b"X"))
    await _until(lambda: any(b"X" in b for b in member.got))  # in flight in worker 0
    closing = asyncio.get_running_loop().create_task(s.close())
    await _until(lambda: telling.done() or "waiting for worker 0's answers" in caplog.text)
    # meanwhile a new commit goes direct (nothing new is sent to worker 0: after close's
    # bound, nothing could be answered for it)
    assert (await asyncio.wait_for(_told(s, b"Y"), 5))[0] == (True, {})
    assert member.applied_at(b"direct Y") and s.forwarded == 1
    member.go.set()
    answer, told = await telling
    await closing
    await batcher.close()  # (every request sent to "etcd" has applied)
    assert [at for at in member.applied_at(b"X") if at > told] == [], (
        f"X applied after its caller was told {answer!r}")
    assert answer == (True, {})


async def test_a_commit_in_flight_when_worker_0_drops_the_connection_is_told_after_its_deadline(
        sharing: tuple[Member, TxnBatcher, SharedCommits],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker 0 drops a connection (here: an unreadable frame on it) with a commit in flight
    in etcd: its sender said "outcome unknown" once its take-in deadline passed, while the
    request could still apply until its deadline in etcd. Now it says so only once a
    request worker 0 sent is past that deadline (`give_up_margin()` after the close)."""
    member, batcher, s = sharing
    monkeypatch.setattr(etcd_share, "REQUEST_TIMEOUT_S", 1.0, raising=False)
    monkeypatch.setattr(etcd_share, "STALL_S", 0.1, raising=False)
    monkeypatch.setattr(etcd_share, "PING_S", 0.3)
    member.slow = b"X"
    telling = asyncio.get_running_loop().create_task(_told(s, b"X"))
    await _until(lambda: any(b"X" in b for b in member.got))  # in etcd, to its deadline
    link = s._link  # noqa: SLF001
    assert link is not None
    link.writer.write(HEAD.pack(MAX_FRAME + 1))  # worker 0 drops the connection
    answer, told = await telling
    await batcher.close()  # (every request sent to "etcd" has applied)
    assert "worker 0 closed the connection; outcome unknown" in str(answer), answer
    late = [at for at in member.applied_at(b"X") if at > told]
    assert not late, f"X applied {late[0] - told:.2f} s after its caller was told {answer!r}"


async def test_a_reconnection_in_progress_when_close_starts_sends_nothing_new_to_worker_0(
        sharing: tuple[Member, TxnBatcher, SharedCommits],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """review22a: close() says new commits go direct while it waits for worker 0's answers,
    but a reconnection begun before it (`_connecting`) still sets `_link` when worker 0
    answers its ping, and the next commits go to worker 0 again; close's bound can then
    tell one "closing; outcome unknown" while worker 0 may still send it."""
    member, batcher, s = sharing
    monkeypatch.setattr(etcd_share, "REQUEST_TIMEOUT_S", 2.0, raising=False)
    monkeypatch.setattr(etcd_share, "STALL_S", 0.1, raising=False)
    monkeypatch.setattr(etcd_share, "PING_S", 0.3)
    monkeypatch.setattr(etcd_share, "AWAY_S", 0.1)
    member.held = b"X"
    telling = asyncio.get_running_loop().create_task(_told(s, b"X"))
    await _until(lambda: any(b"X" in b for b in member.got))  # in flight in worker 0
    link = s._link  # noqa: SLF001
    assert link is not None
    link.writer.write(HEAD.pack(MAX_FRAME + 1))  # worker 0 drops the connection: X's
    await _until(lambda: link.closed)  # caller waits ~2 s (its request's deadline)
    await _until(lambda: time.monotonic() >= s._away_until)  # noqa: SLF001
    assert (await _told(s, b"Y"))[0] == (True, {})  # direct; a reconnection starts
    assert s._connecting is not None  # noqa: SLF001
    closing = asyncio.get_running_loop().create_task(s.close())  # waits for X
    await _until(lambda: s._connecting is None)  # noqa: SLF001  # the reconnection ended
    forwarded = s.forwarded
    z = asyncio.get_running_loop().create_task(_told(s, b"Z"))
    await _until(lambda: z.done() or s.forwarded > forwarded)
    member.go.set()
    await telling
    await z
    await closing
    assert s.forwarded == forwarded, "a commit went to worker 0 while this worker closed"
