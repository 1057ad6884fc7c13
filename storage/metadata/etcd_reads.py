"""Concurrent etcd reads sent together: one read-only Txn whose success ops are the callers'
ranges one after another, so N reads cost one gRPC call and one linearizable read on the
members (a ReadIndex) instead of N.

A read-only Txn is one linearizable snapshot, taken after it was sent; every caller in it
asked before it was sent and gets its answer after it returned, so each read still happens
within its own caller's interval. (A Txn nesting Txns is not read-only to etcd and would go
through Raft: the ranges are flattened instead, and each caller's answers are its slice.)

One request is in flight at a time: callers arriving meanwhile are sent together when it
returns, so under no concurrency a read goes out alone at once. A request that fails fails
every caller in it with the same error (the call already tried the other members: reads
are idempotent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from storage.errors import StorageError
from storage.metadata.etcd_batch import MAX_OPS, REFUSED_WHOLE, _own_copy
from storage.metadata.etcdpb import etcd_wire_pb2 as pb

# sends one read-only Txn (retried on other members: it changes nothing)
ReadCall = Callable[[pb.TxnRequest], Awaitable[pb.TxnResponse]]


class ReadBatcher:
    """Sends callers' ranges through `call`, concurrent ones in one read-only Txn."""

    def __init__(self, call: ReadCall) -> None:
        self._call = call
        self._queue: list[tuple[list[pb.RangeRequest],
                                asyncio.Future[list[pb.RangeResponse]]]] = []
        self._flight: asyncio.Task[None] | None = None
        self.shared = 0  # requests that carried more than one caller (tests)

    async def run(self, ranges: Sequence[pb.RangeRequest]) -> list[pb.RangeResponse]:
        """The answers to `ranges` (at most MAX_OPS), in order, from one snapshot."""
        if len(ranges) > MAX_OPS:
            raise StorageError(f"etcd read of {len(ranges)} ranges (at most {MAX_OPS})")
        answer: asyncio.Future[list[pb.RangeResponse]] = (
            asyncio.get_running_loop().create_future())
        self._queue.append((list(ranges), answer))
        if self._flight is None:
            self._flight = asyncio.get_running_loop().create_task(self._send(),
                                                                  name="etcd-read-batch")
        return await asyncio.shield(answer)

    def _take(self) -> list[tuple[list[pb.RangeRequest], asyncio.Future[list[pb.RangeResponse]]]]:
        """The longest prefix of the queue whose ranges fit one Txn."""
        n = taken = 0
        while taken < len(self._queue) and (
                taken == 0 or n + len(self._queue[taken][0]) <= MAX_OPS):
            n += len(self._queue[taken][0])
            taken += 1
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    async def _send(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if len(batch) > 1:
                    self.shared += 1
                request = pb.TxnRequest(success=[pb.RequestOp(request_range=r)
                                                 for ranges, _ in batch for r in ranges])
                try:
                    data = await self._call(request)
                    if len(data.responses) != len(request.success):
                        raise StorageError(f"etcd txn: {len(data.responses)} answers to "
                                           f"{len(request.success)} reads")
                except StorageError as exc:
                    if len(batch) == 1 or not any(r in str(exc) for r in REFUSED_WHOLE):
                        self._fail(batch, exc)
                        continue
                    # refused as a whole (a member's own --max-txn-ops or request size is
                    # lower than ours): each caller's ranges go alone, as the writes do
                    for ranges, answer in batch:
                        await self._alone(ranges, answer)
                    continue
                except BaseException as exc:  # every caller learns what a lone read would
                    for i, (_, answer) in enumerate(batch):
                        _settle(answer, exc if i == 0 else _own_copy(exc))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                at = 0
                for ranges, answer in batch:
                    if not answer.done():
                        answer.set_result([a.response_range
                                           for a in data.responses[at:at + len(ranges)]])
                    at += len(ranges)
        finally:
            self._flight = None

    @staticmethod
    def _fail(batch: list[tuple[list[pb.RangeRequest], asyncio.Future[list[pb.RangeResponse]]]],
              exc: BaseException) -> None:
        for i, (_, answer) in enumerate(batch):
            _settle(answer, exc if i == 0 else _own_copy(exc))

    async def _alone(self, ranges: list[pb.RangeRequest],
                     answer: asyncio.Future[list[pb.RangeResponse]]) -> None:
        """One caller's ranges in a request of their own (after a batch was refused)."""
        try:
            data = await self._call(pb.TxnRequest(
                success=[pb.RequestOp(request_range=r) for r in ranges]))
            if len(data.responses) != len(ranges):
                raise StorageError(f"etcd txn: {len(data.responses)} answers to "
                                   f"{len(ranges)} reads")
        except Exception as exc:  # noqa: BLE001 - that caller's own error
            _settle(answer, exc)
            return
        if not answer.done():
            answer.set_result([a.response_range for a in data.responses])

    async def close(self) -> None:
        """Wait for the request in flight (its callers get its answer or its error)."""
        if self._flight is not None:
            await asyncio.wait([self._flight])


def _settle(answer: asyncio.Future[list[pb.RangeResponse]], exc: BaseException) -> None:
    """Fail `answer` (retrieved here: a caller cancelled meanwhile leaves nothing behind)."""
    if not answer.done():
        answer.set_exception(exc)
        answer.exception()
