"""Concurrent etcd transactions nested in one Txn (storage/metadata/etcd_batch.py), against a
fake gateway call: which ones share a request, that each caller gets its own answer, and
that a failed request fails every caller in it. The real etcd's handling of the nested
Txn is in tests/contract/test_etcd_batch.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storage.errors import StorageError
from storage.metadata import Txn, etcd_batch
from storage.metadata.etcd_batch import MAX_MEMBERS, Pending, TxnBatcher, Wanted
from storage.metadata.etcdpb import etcd_wire_pb2 as pb


class FakeGateway:
    """Answers Txn like etcd: nested ones succeed unless they compare key b"fail"; the
    first request is held until `release` is set, so the others queue behind it."""

    def __init__(self) -> None:
        self.bodies: list[pb.TxnRequest] = []
        self.release = asyncio.Event()
        self.error: Exception | None = None
        self.refuse_nested = False  # as a cluster with a lower --max-txn-ops

    @staticmethod
    def _one(body: pb.TxnRequest) -> pb.TxnResponse:
        if any(c.key == b"fail" for c in body.compare):
            reads = [pb.ResponseOp(response_range=pb.RangeResponse(kvs=[pb.KeyValue(
                key=r.request_range.key, value=b"cur", mod_revision=7)])) for r in body.failure]
            return pb.TxnResponse(responses=reads)
        return pb.TxnResponse(succeeded=True)

    async def call(self, raw: bytes, still: Wanted | None = None) -> pb.TxnResponse:
        body = pb.TxnRequest.FromString(raw)  # as etcd parses what the batcher sends
        self.bodies.append(body)
        await self.release.wait()
        if self.error is not None:
            raise self.error
        nested = [op.request_txn for op in body.success if op.HasField("request_txn")]
        if nested and self.refuse_nested:
            raise StorageError("etcd Txn: etcdserver: too many operations in txn request")
        if nested:
            assert not body.compare and len(nested) == len(body.success)
            return pb.TxnResponse(succeeded=True, responses=[
                pb.ResponseOp(response_txn=self._one(b)) for b in nested])
        return self._one(body)


def put(key: bytes, compare: bytes | None = None) -> Txn:
    return Txn(compares={compare or key: 0}, puts={key: b"v"})


async def _queued(fake: FakeGateway, batcher: TxnBatcher, txns: list[Txn],
                  reads: tuple[bytes, ...] = ()) -> list[asyncio.Task[Any]]:
    """Start `txns` behind a first one held in flight."""
    first = asyncio.create_task(batcher.run(put(b"first"), ()))
    while not fake.bodies:
        await asyncio.sleep(0)
    tasks = [asyncio.create_task(batcher.run(t, reads)) for t in txns]
    await asyncio.sleep(0)
    return [first, *tasks]


async def test_a_lone_transaction_goes_out_plain_at_once() -> None:
    fake = FakeGateway()
    fake.release.set()
    batcher = TxnBatcher(fake.call)
    assert await batcher.run(put(b"a"), ()) == (True, {})
    assert len(fake.bodies) == 1 and fake.bodies[0].success[0].HasField("request_put")
    assert batcher.batches == 0


async def test_waiting_transactions_share_one_request_each_with_its_own_answer() -> None:
    fake = FakeGateway()
    batcher = TxnBatcher(fake.call)
    tasks = await _queued(fake, batcher, [put(b"a"), put(b"b", compare=b"fail"), put(b"c")],
                          reads=(b"fail",))
    fake.release.set()
    first, a, b, c = await asyncio.gather(*tasks)
    assert first == (True, {}) and a == (True, {}) and c == (True, {})
    done, seen = b
    assert not done and seen[b"fail"] is not None and seen[b"fail"].revision == 7
    assert len(fake.bodies) == 2 and batcher.batches == 1
    assert len(fake.bodies[1].success) == 3


async def test_a_transaction_touching_a_written_key_waits_for_the_next_request() -> None:
    fake = FakeGateway()
    batcher = TxnBatcher(fake.call)
    # b compares what a writes; c writes what d compares; e is free but comes after d
    txns = [put(b"a"), Txn(compares={b"a": 5}, puts={b"b": b"v"}), put(b"c"),
            Txn(compares={b"c": 3, b"d": 0}, puts={b"d": b"v"}), put(b"e")]
    tasks = await _queued(fake, batcher, txns)
    fake.release.set()
    await asyncio.gather(*tasks)
    sent = [[op.request_txn.success[0].request_put.key for op in body.success]
            if body.success[0].HasField("request_txn")
            else [body.success[0].request_put.key] for body in fake.bodies]
    assert sent == [[b"first"], [b"a"], [b"b", b"c"], [b"d", b"e"]]


async def test_a_batch_holds_at_most_max_members() -> None:
    fake = FakeGateway()
    batcher = TxnBatcher(fake.call)
    tasks = await _queued(fake, batcher, [put(b"k%d" % i) for i in range(MAX_MEMBERS + 3)])
    fake.release.set()
    await asyncio.gather(*tasks)
    assert [len(b.success) for b in fake.bodies] == [1, MAX_MEMBERS, 3]


async def test_a_big_transaction_goes_alone() -> None:
    fake = FakeGateway()
    batcher = TxnBatcher(fake.call)
    big = Txn(puts={b"big%d" % i: b"v" for i in range(100)})
    tasks = await _queued(fake, batcher, [put(b"a"), big, put(b"b")])
    fake.release.set()
    await asyncio.gather(*tasks)
    assert len(fake.bodies) == 3  # first, big (alone, not queued), then a and b together
    assert len(fake.bodies[1].success) == 100 and batcher.batches == 1


async def test_a_failed_request_fails_every_caller_in_it() -> None:
    fake = FakeGateway()
    batcher = TxnBatcher(fake.call)
    tasks = await _queued(fake, batcher, [put(b"a"), put(b"b")])
    fake.error = StorageError("etcd /kv/txn failed after sending")
    fake.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, StorageError) for r in results), results
    assert results[1] is not results[2] and str(results[1]) == str(results[2])  # each its own
    fake.error = None
    assert await batcher.run(put(b"c"), ()) == (True, {})  # the next one goes out


async def test_a_caller_cancelled_while_queued_is_never_sent() -> None:
    fake = FakeGateway()
    batcher = TxnBatcher(fake.call)
    first, gone, kept = await _queued(fake, batcher, [put(b"gone"), put(b"kept")])
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    fake.release.set()
    await asyncio.gather(first, kept)
    keys = [op.request_put.key for b in fake.bodies for op in b.success]
    assert b"gone" not in keys and b"kept" in keys


async def test_a_batch_refused_as_a_whole_sends_its_members_alone() -> None:
    fake = FakeGateway()
    fake.refuse_nested = True
    batcher = TxnBatcher(fake.call)
    tasks = await _queued(fake, batcher, [put(b"a"), put(b"b", compare=b"fail")],
                          reads=(b"fail",))
    fake.release.set()
    first, a, b = await asyncio.gather(*tasks)
    assert a == (True, {}) and not b[0] and b[1][b"fail"] is not None
    assert len(fake.bodies) == 4  # first, the refused batch, then a and b alone


class GatedGateway(FakeGateway):
    """Each request is held until the test opens its gate (gates[i] for the i-th request)."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[asyncio.Event] = []

    async def call(self, raw: bytes, still: Wanted | None = None) -> pb.TxnResponse:
        body = pb.TxnRequest.FromString(raw)
        gate = asyncio.Event()
        self.gates.append(gate)
        self.bodies.append(body)
        await gate.wait()
        nested = [op.request_txn for op in body.success if op.HasField("request_txn")]
        if nested:
            return pb.TxnResponse(succeeded=True, responses=[
                pb.ResponseOp(response_txn=self._one(b)) for b in nested])
        return self._one(body)


async def _sent(fake: GatedGateway, n: int) -> None:
    while len(fake.bodies) < n:
        await asyncio.sleep(0)


def _slow_round_trips(batcher: TxnBatcher, rtt_s: float) -> None:
    """Every request's round trip measures `rtt_s` (the batcher's clock steps by it)."""
    ticks = iter(range(1_000_000))
    batcher._clock = lambda: next(ticks) * rtt_s


async def test_after_a_shared_request_the_next_waits_for_more_callers() -> None:
    from storage.metadata.etcd_batch import FILL

    fake = GatedGateway()
    batcher = TxnBatcher(fake.call, linger_max_s=120.0)
    _slow_round_trips(batcher, 1000.0)  # the wait is bounded by linger_max_s: 2 minutes
    first = asyncio.create_task(batcher.run(put(b"first"), ()))
    await _sent(fake, 1)
    pair = [asyncio.create_task(batcher.run(put(b"p%d" % i), ())) for i in range(2)]
    await asyncio.sleep(0)
    fake.gates[0].set()  # a lone request returns: the queued pair goes at once, shared
    await _sent(fake, 2)
    late = [asyncio.create_task(batcher.run(put(b"late0"), ()))]
    await asyncio.sleep(0)
    fake.gates[1].set()  # the shared request returns with one caller queued: it waits
    await asyncio.gather(first, *pair)
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(fake.bodies) == 2
    late += [asyncio.create_task(batcher.run(put(b"late%d" % i), ())) for i in range(1, FILL)]
    await _sent(fake, 3)  # FILL callers queued: sent without waiting out the linger
    assert len(fake.bodies[2].success) == FILL and batcher.batches == 2
    fake.gates[2].set()
    assert all(r == (True, {}) for r in await asyncio.gather(*late))


async def test_the_wait_for_more_callers_is_bounded() -> None:
    from storage.metadata.etcd_batch import LINGER_MAX_S

    fake = GatedGateway()
    batcher = TxnBatcher(fake.call)
    _slow_round_trips(batcher, 0.02)  # the wait: half a 20 ms round trip, capped at
    wait_s = min(LINGER_MAX_S, 0.01)  # LINGER_MAX_S: 5 ms
    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(batcher.run(put(b"first"), ()))]
    await _sent(fake, 1)
    tasks += [asyncio.create_task(batcher.run(put(b"p%d" % i), ())) for i in range(2)]
    await asyncio.sleep(0)
    fake.gates[0].set()
    await _sent(fake, 2)
    tasks.append(asyncio.create_task(batcher.run(put(b"alone"), ())))
    await asyncio.sleep(0)
    returned = loop.time()
    fake.gates[1].set()
    await _sent(fake, 3)  # no one else came: it goes out alone after the wait
    waited = loop.time() - returned
    fake.gates[2].set()
    assert all(r == (True, {}) for r in await asyncio.gather(*tasks))
    assert [len(b.success) for b in fake.bodies] == [1, 2, 1]
    # It waited (a loop timer never fires early), and the wait ended (not at FILL callers).
    assert 0.8 * wait_s <= waited < 1.0


async def test_after_a_lone_request_a_queued_caller_goes_at_once() -> None:
    fake = GatedGateway()
    batcher = TxnBatcher(fake.call, linger_max_s=120.0)
    _slow_round_trips(batcher, 1000.0)
    first = asyncio.create_task(batcher.run(put(b"first"), ()))
    await _sent(fake, 1)
    second = asyncio.create_task(batcher.run(put(b"second"), ()))
    await asyncio.sleep(0)
    fake.gates[0].set()
    await _sent(fake, 2)  # (would hang 2 minutes if it waited)
    fake.gates[1].set()
    assert await asyncio.gather(first, second) == [(True, {}), (True, {})]


async def test_after_a_shared_request_a_caller_finding_nothing_in_flight_waits_too() -> None:
    """Under concurrency the batcher is idle between requests whenever the gateway is busier
    than etcd: a caller arriving then waits for more as one queued behind a flight does, so
    the next request is shared instead of a one-commit Txn (~1.15 ms of members' CPU each)."""
    from storage.metadata.etcd_batch import FILL

    fake = GatedGateway()
    batcher = TxnBatcher(fake.call, linger_max_s=120.0)
    _slow_round_trips(batcher, 1000.0)  # the wait is bounded by linger_max_s: 2 minutes
    first = asyncio.create_task(batcher.run(put(b"first"), ()))
    await _sent(fake, 1)
    pair = [asyncio.create_task(batcher.run(put(b"p%d" % i), ())) for i in range(2)]
    await asyncio.sleep(0)
    fake.gates[0].set()
    await _sent(fake, 2)
    fake.gates[1].set()  # the shared request returns with nobody queued: nothing in flight
    await asyncio.gather(first, *pair)
    late = [asyncio.create_task(batcher.run(put(b"late0"), ()))]
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(fake.bodies) == 2, "a caller arriving idle under concurrency went out alone"
    late += [asyncio.create_task(batcher.run(put(b"late%d" % i), ())) for i in range(1, FILL)]
    await _sent(fake, 3)  # FILL callers queued: sent without waiting out the linger
    assert len(fake.bodies[2].success) == FILL and batcher.batches == 2
    fake.gates[2].set()
    assert all(r == (True, {}) for r in await asyncio.gather(*late))


async def test_a_transaction_over_etcds_request_limit_is_refused_before_sending(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """etcd refuses a request over --max-request-bytes (less its Raft header); the batcher
    refuses it first, saying why, and sends nothing; one under the limit goes out."""
    monkeypatch.setattr(etcd_batch, "MAX_REQUEST_BYTES", 8192)
    fake = FakeGateway()
    fake.release.set()
    batcher = TxnBatcher(fake.call)
    with pytest.raises(StorageError, match=r"etcd transaction of \d+ bytes: over the 7680 "
                                           r"bytes one etcd request may carry"):
        await batcher.run(Txn(compares={b"k": 0}, puts={b"k": b"v" * 7700}), ())
    assert fake.bodies == []
    assert await batcher.run(Txn(compares={b"k": 0}, puts={b"k": b"v" * 7000}), ()) == (True, {})
    assert len(fake.bodies) == 1


async def test_a_transaction_no_longer_wanted_when_taken_is_never_sent() -> None:
    """A caller's `wanted` is checked when its transaction is taken for a request (not when
    queued, nor by a timer): one no longer wanted is answered NotSent and never sent, the
    others queued with it go (etcd_share's worker 0: its sender has given up on it)."""
    fake = FakeGateway()
    batcher = TxnBatcher(fake.call)
    want = {b"a": True, b"b": True}
    first = asyncio.create_task(batcher.run(put(b"first"), ()))
    while not fake.bodies:
        await asyncio.sleep(0)
    tasks = [asyncio.create_task(batcher.run(put(k), (), lambda k=k: want[k])) for k in want]
    await asyncio.sleep(0)
    want[b"a"] = False  # (after it was queued)
    fake.release.set()
    assert await first == (True, {})
    with pytest.raises(etcd_batch.NotSent):
        await tasks[0]
    assert await tasks[1] == (True, {})
    assert [op.request_put.key for body in fake.bodies[1:] for op in body.success] == [b"b"]
    # one too big to share a request is checked as it would be sent too
    big = Txn(puts={b"k%d" % i: b"v" for i in range(etcd_batch.MAX_MEMBER_OPS + 1)})
    with pytest.raises(etcd_batch.NotSent):
        await batcher.run(big, (), lambda: False)
    assert len(fake.bodies) == 2


async def test_a_transaction_no_longer_wanted_is_not_sent_alone_after_its_request_was_refused(
        ) -> None:
    """review21i finding 3: etcd refuses a nested request whole (a lower --max-txn-ops):
    its members go alone, one after another, each checked again as it would be sent; one
    no longer wanted by then (the ones before took time) is answered NotSent, never sent."""
    fake = FakeGateway()
    fake.refuse_nested = True
    want = {b"a": True, b"b": True, b"c": True}

    async def call(raw: bytes, still: Wanted | None = None) -> pb.TxnResponse:
        answer = await fake.call(raw, still)
        if raw == Pending.of(put(b"a"), ()).body:  # a alone took time: b's sender gave up
            want[b"b"] = False
        return answer

    batcher = TxnBatcher(call)
    first = asyncio.create_task(batcher.run(put(b"first"), ()))
    while not fake.bodies:
        await asyncio.sleep(0)
    tasks = [asyncio.create_task(batcher.run(put(k), (), lambda k=k: want[k])) for k in want]
    await asyncio.sleep(0)
    fake.release.set()
    assert await first == (True, {})
    assert await tasks[0] == (True, {})
    with pytest.raises(etcd_batch.NotSent):
        await tasks[1]
    assert await tasks[2] == (True, {})
    alone = [[op.request_put.key for op in body.success] for body in fake.bodies[2:]]
    assert alone == [[b"a"], [b"c"]]  # (bodies[1]: the nested request etcd refused)
