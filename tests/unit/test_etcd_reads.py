"""Concurrent etcd reads flattened into one read-only Txn (storage/metadata/etcd_reads.py),
against a fake call: which reads share a request, that each caller gets exactly its own
answers, and that a failed request fails every caller in it. The real etcd's answers are
in tests/contract/test_etcd_reads.py."""

from __future__ import annotations

import asyncio

import pytest

from storage.errors import StorageError
from storage.metadata.etcd_batch import MAX_OPS
from storage.metadata.etcd_reads import ReadBatcher
from storage.metadata.etcdpb import etcd_wire_pb2 as pb


class FakeMember:
    """Answers each range with one record whose value is its key; the first request is
    held until `release` is set, so the others queue behind it."""

    def __init__(self) -> None:
        self.requests: list[pb.TxnRequest] = []
        self.release = asyncio.Event()
        self.error: Exception | None = None

    async def call(self, request: pb.TxnRequest) -> pb.TxnResponse:
        self.requests.append(request)
        await self.release.wait()
        if self.error is not None:
            raise self.error
        assert not request.compare and not request.failure  # read-only: no Raft entry
        return pb.TxnResponse(succeeded=True, responses=[
            pb.ResponseOp(response_range=pb.RangeResponse(kvs=[pb.KeyValue(
                key=op.request_range.key, value=op.request_range.key)]))
            for op in request.success])


async def settle(until: object = None) -> None:
    """Let the event loop run the ready tasks (no timers anywhere: yields, not time), until
    `until()` holds if given."""
    for _ in range(50):
        await asyncio.sleep(0)
        if until is not None and until():  # type: ignore[operator]
            return
    assert until is None, "never held"


def ranges(*keys: bytes) -> list[pb.RangeRequest]:
    return [pb.RangeRequest(key=k) for k in keys]


def values(answers: list[pb.RangeResponse]) -> list[bytes]:
    return [a.kvs[0].value for a in answers]


async def test_a_lone_read_goes_at_once_and_concurrent_ones_share_the_next() -> None:
    member = FakeMember()
    reads = ReadBatcher(member.call)
    first = asyncio.create_task(reads.run(ranges(b"a")))
    await settle(lambda: member.requests)
    assert len(member.requests) == 1  # sent alone, at once
    queued = [asyncio.create_task(reads.run(ranges(b"b%d" % i, b"c%d" % i)))
              for i in range(5)]
    await settle()
    assert len(member.requests) == 1  # queued behind the one in flight
    member.release.set()
    assert values(await first) == [b"a"]
    for i, task in enumerate(queued):  # each caller its own slice, in its own order
        assert values(await task) == [b"b%d" % i, b"c%d" % i]
    assert len(member.requests) == 2 and len(member.requests[1].success) == 10
    assert reads.shared == 1


async def test_a_batch_holds_at_most_max_ops_ranges() -> None:
    member = FakeMember()
    reads = ReadBatcher(member.call)
    first = asyncio.create_task(reads.run(ranges(b"x")))
    await settle(lambda: member.requests)
    per = 3
    count = MAX_OPS // per + 2
    queued = [asyncio.create_task(reads.run(ranges(*(b"k%d-%d" % (i, j) for j in range(per)))))
              for i in range(count)]
    await settle()
    member.release.set()
    await first
    for i, task in enumerate(queued):
        assert values(await task) == [b"k%d-%d" % (i, j) for j in range(per)]
    sizes = [len(r.success) for r in member.requests[1:]]
    assert sizes == [MAX_OPS // per * per, (count - MAX_OPS // per) * per]
    with pytest.raises(StorageError):
        await reads.run(ranges(*(b"%d" % i for i in range(MAX_OPS + 1))))


async def test_a_failed_request_fails_every_caller_in_it_and_not_the_next() -> None:
    member = FakeMember()
    reads = ReadBatcher(member.call)
    first = asyncio.create_task(reads.run(ranges(b"a")))
    await settle(lambda: member.requests)
    member.error = StorageError("no etcd endpoint answered Txn")
    queued = [asyncio.create_task(reads.run(ranges(b"b%d" % i))) for i in range(3)]
    await settle()
    member.release.set()
    for task in [first, *queued]:
        with pytest.raises(StorageError, match="no etcd endpoint"):
            await task
    errors = [t.exception() for t in queued]
    assert len({id(e) for e in errors}) == 3  # each caller raises its own error object
    member.error = None
    assert values(await reads.run(ranges(b"later"))) == [b"later"]
    await reads.close()


async def test_a_cancelled_caller_leaves_the_others_their_answers() -> None:
    member = FakeMember()
    reads = ReadBatcher(member.call)
    first = asyncio.create_task(reads.run(ranges(b"a")))
    await settle(lambda: member.requests)
    gone = asyncio.create_task(reads.run(ranges(b"gone")))
    kept = asyncio.create_task(reads.run(ranges(b"kept")))
    await settle()
    gone.cancel()
    member.release.set()
    assert values(await first) == [b"a"] and values(await kept) == [b"kept"]
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_a_batch_refused_as_a_whole_is_sent_caller_by_caller() -> None:
    """A member with a lower --max-txn-ops than MAX_OPS (etcd: "too many operations in txn
    request", the whole request refused before anything ran) must not fail every read
    asked meanwhile: each caller's ranges go alone, as TxnBatcher does for writes
    (REFUSED_WHOLE). Real etcd with --max-txn-ops 64 failed 40 of 40 concurrent
    read-aheads before."""
    member = FakeMember()
    limit = 4

    async def call(request: pb.TxnRequest) -> pb.TxnResponse:
        if len(request.success) > limit:
            member.requests.append(request)
            raise StorageError("etcd Txn failed on m: INVALID_ARGUMENT: etcdserver: too many "
                               "operations in txn request")
        return await member.call(request)

    reads = ReadBatcher(call)
    first = asyncio.create_task(reads.run(ranges(b"a")))
    await settle(lambda: member.requests)
    queued = [asyncio.create_task(reads.run(ranges(b"b%d" % i, b"c%d" % i))) for i in range(4)]
    await settle()
    member.release.set()
    assert values(await first) == [b"a"]
    for i, task in enumerate(queued):
        assert values(await task) == [b"b%d" % i, b"c%d" % i]


async def test_a_read_asked_while_one_is_in_flight_never_takes_its_answer() -> None:
    """Linearizability: a read asked after a write returned, while a read of the same key
    sent before that write is still in flight, must go in a request of its own, sent after
    it was asked, and see the write (joining the request in flight, as tenant caches' shared
    reads do, would answer it with the value from before the write)."""
    state = {b"k": b"old"}
    member = FakeMember()

    async def call(request: pb.TxnRequest) -> pb.TxnResponse:
        seen = [state.get(op.request_range.key) for op in request.success]  # read at send
        member.requests.append(request)
        await member.release.wait()
        return pb.TxnResponse(succeeded=True, responses=[
            pb.ResponseOp(response_range=pb.RangeResponse(kvs=[pb.KeyValue(
                key=op.request_range.key, value=v)] if v is not None else []))
            for op, v in zip(request.success, seen, strict=True)])

    reads = ReadBatcher(call)
    first = asyncio.create_task(reads.run(ranges(b"k")))
    await settle(lambda: member.requests)
    state[b"k"] = b"new"  # a write acknowledged now, through any gateway
    later = asyncio.create_task(reads.run(ranges(b"k")))
    await settle()
    member.release.set()
    assert values(await first) == [b"old"]
    assert values(await later) == [b"new"]
    assert len(member.requests) == 2
