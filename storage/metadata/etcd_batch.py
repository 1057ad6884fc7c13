"""Concurrent etcd transactions sent together: one Txn whose success ops are the callers'
transactions nested (etcd 3.3+), so N commits cost one gRPC call, one Raft entry and one
apply instead of N.

Each nested transaction keeps its own compares and its own success or failure branch, so a
caller sees exactly what its own Txn would have done. etcd evaluates every compare of a
request before applying any op, and applies the nested ops in order; so transactions share a
batch only when none writes a key another one writes, compares or reads (then any order of
them gives the same result, and no failure read sees another member's write). A transaction
that conflicts waits for the next batch, as do all after it (per-key order is kept). One
batch is in flight at a time: callers arriving meanwhile are sent together when it returns,
so under no concurrency a transaction goes out alone at once, as a plain Txn. Under
concurrency (the last batch carried several callers) the next one waits a little for more
(see FILL), also when it found nothing in flight: the members' CPU is mostly per request,
not per nested transaction.

A batch that fails (connection, timeout, no leader) fails every caller in it with the same
error a lone request would have raised: none of them knows whether it applied.

A caller may say until when it wants its transaction sent (`run`'s `wanted`: worker 0 of
storage/metadata/etcd_share.py, whose sender gives up on a commit at a known time): that is
checked when the transaction is taken for a request, and one no longer wanted is dropped,
never sent (`NotSent`), whatever the event loop did meanwhile (stopped, lagging). The check
goes with the request to `call`, which repeats it before it fails the request over to another
etcd member (the first never got it, or had no leader): when any transaction of the request
is no longer wanted by then, the request ends unsent; its transactions with a `wanted` are
answered NotSent (their senders send them themselves), the others are queued again, first.
"""

from __future__ import annotations

import asyncio
import binascii
import copy
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from storage.errors import StorageError
from storage.metadata import Item, Txn
from storage.metadata.etcd_wire import nested_request, txn_request
from storage.metadata.etcdpb import etcd_wire_pb2 as pb

# etcd checks a nested Txn against --max-txn-ops minus its parent's op count (default 128):
# members and their ops are kept under that; a bigger transaction goes alone.
MAX_MEMBERS = 48
MAX_MEMBER_OPS = 64
MAX_OPS = 128
MAX_BYTES = 512 * 1024  # raw key + value bytes per batch (etcd refuses requests over 1.5 MiB)
# The largest request Tessera sends: the --max-request-bytes of the members it starts
# (ops/etcdcluster.py). etcd compares it with the request wrapped in its Raft entry (a header
# of an id, the user name and an auth revision: under RAFT_WRAP_BYTES), so a transaction
# whose own request is bigger than the difference is refused here, before it is sent, with
# an error that says why; operators' members at etcd's default (1.5 MiB) refuse smaller ones
# themselves ("request is too large"), each alone.
MAX_REQUEST_BYTES = 8 * 1024 * 1024
RAFT_WRAP_BYTES = 512
# After a request that carried several callers returns with more already queued (commits
# arriving concurrently), the next one waits for more: until FILL are queued, for at most
# half the last request's round trip and LINGER_MAX_S. The members' CPU is mostly per request
# (a Raft entry, its fsync on each member, the apply): ~3 ms a Txn against ~0.2 ms a nested
# PutObject on 3 members (benchmarks/README.md, session 11). A caller arriving after a
# request that carried one caller goes at once. One arriving with nothing in flight waits
# the same way when the last request carried several: with gateways busier than etcd (a
# loaded host) the batcher is idle between requests most of the time, and sending each
# such arrival at once made ~40% of the Txns carry one commit (session 20, etcd20b).
FILL = 16
LINGER_MAX_S = 0.005
# etcd's refusals of a whole request before it applies anything (a cluster configured with
# lower --max-txn-ops or --max-request-bytes than the above): its members then go alone
REFUSED_WHOLE = ("too many operations in txn request", "request is too large",
                 "message larger than max")

# whether a caller still wants its transaction sent (checked just before it is)
Wanted = Callable[[], bool]
# sends one Txn, a serialized TxnRequest (never retried once sent: a write); before sending
# it to another member (the first never got it), it raises NotSent if `still` says no
Call = Callable[[bytes, Wanted | None], Awaitable[pb.TxnResponse]]


class NotSent(StorageError):
    """A transaction dropped unsent: its caller no longer wanted it (`TxnBatcher.run`)."""


def b64(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def unb64(text: str | None) -> bytes:
    # binascii directly: base64.b64decode's checks cost more than the decoding of a key
    return binascii.a2b_base64(text) if text else b""


def item_of(kv: pb.KeyValue) -> Item:
    """An Item from an etcd KeyValue."""
    return Item(kv.key, kv.value, kv.mod_revision)


def compare_rev(key: bytes, rev: int) -> pb.Compare:
    """key's mod_revision == rev; an absent key has mod_revision 0."""
    return pb.Compare(key=key, target=pb.Compare.MOD, result=pb.Compare.EQUAL,
                      mod_revision=rev)


@dataclass
class Pending:
    """One caller's transaction: its Txn, the keys it writes and the keys it compares
    or reads (for conflicts), its size, and where its answer goes."""

    body: bytes  # its TxnRequest, serialized (storage/metadata/etcd_wire.py)
    reads: tuple[bytes, ...]
    writes: frozenset[bytes]
    touches: frozenset[bytes]
    ops: int
    size: int
    answer: asyncio.Future[tuple[bool, dict[bytes, Item | None]]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    wanted: Wanted | None = None  # None: always

    def dropped(self) -> bool:
        """Whether its caller no longer wants it sent: then it is answered NotSent."""
        if self.wanted is None or self.wanted():
            return False
        if not self.answer.done():
            self.answer.set_exception(NotSent("etcd transaction no longer wanted; not sent"))
            self.answer.exception()
        return True

    @classmethod
    def of(cls, txn: Txn, reads: tuple[bytes, ...]) -> Pending:
        deletes = set(txn.deletes)
        puts = ({k: v for k, v in txn.puts.items() if k not in deletes}  # put-then-delete
                if deletes else txn.puts)  # = deleted
        dels = list(dict.fromkeys(txn.deletes))
        size = sum(len(k) + len(v) for k, v in puts.items()) + sum(len(k) for k in deletes)
        return cls(txn_request(txn.compares, puts, dels, reads), reads,
                   frozenset(puts) | deletes, frozenset(txn.compares) | set(reads),
                   max(len(puts) + len(dels), len(txn.compares), len(reads)), size)

    @property
    def alone(self) -> bool:
        """Too big to share a request."""
        return self.ops > MAX_MEMBER_OPS or self.size > MAX_BYTES // 4


def answer_of(data: pb.TxnResponse, reads: tuple[bytes, ...]
              ) -> tuple[bool, dict[bytes, Item | None]]:
    """A TxnResponse (top level or nested) as `txn_or_read`'s result."""
    if data.succeeded:
        return True, {}
    answers = data.responses
    if len(answers) != len(reads):
        raise StorageError(f"etcd txn: {len(answers)} answers to {len(reads)} reads")
    seen: dict[bytes, Item | None] = {}
    for key, answer in zip(reads, answers, strict=True):
        kvs = answer.response_range.kvs
        seen[key] = item_of(kvs[0]) if kvs else None
    return False, seen


class TxnBatcher:
    """Sends callers' transactions through `call`, concurrent ones nested in one Txn."""

    def __init__(self, call: Call, linger_max_s: float = LINGER_MAX_S) -> None:
        self._call = call
        self._queue: deque[Pending] = deque()
        self._flight: asyncio.Task[None] | None = None
        self._filled: asyncio.Event | None = None  # set when FILL callers are queued
        self._linger_max_s = linger_max_s
        self._rtt_s = 0.0  # the last request's round trip
        self._shared = False  # whether the last request carried more than one caller
        self._clock = time.monotonic  # (tests set the round trips they need)
        self.batches = 0  # requests that carried more than one transaction (tests)

    async def run(self, txn: Txn, reads: tuple[bytes, ...], wanted: Wanted | None = None
                  ) -> tuple[bool, dict[bytes, Item | None]]:
        """`txn`'s outcome and, when it failed, `reads`' items; a transaction `wanted` says
        is no longer wanted when it would be sent is dropped (NotSent)."""
        p = Pending.of(txn, reads)
        p.wanted = wanted
        if len(p.body) > MAX_REQUEST_BYTES - RAFT_WRAP_BYTES:
            raise StorageError(f"etcd transaction of {len(p.body)} bytes: over the "
                               f"{MAX_REQUEST_BYTES - RAFT_WRAP_BYTES} bytes one etcd request "
                               f"may carry (--max-request-bytes {MAX_REQUEST_BYTES} less its "
                               "Raft entry's header); not sent")
        if p.alone:
            if p.dropped():
                return await p.answer
            return answer_of(await self._call(p.body, _still([p])), reads)
        self._queue.append(p)
        if self._flight is None:  # a lone caller goes at once; under concurrency it waits
            self._send_next(linger=True)  # for more, as a caller queued behind a flight
        elif self._filled is not None and len(self._queue) >= FILL:
            self._filled.set()
        try:
            return await asyncio.shield(p.answer)
        except asyncio.CancelledError:
            if p in self._queue:  # not sent: it never will be
                self._queue.remove(p)
            raise

    def _take(self) -> list[Pending]:
        """The longest prefix of the queue that can share one request."""
        batch: list[Pending] = []
        writes: set[bytes] = set()
        touches: set[bytes] = set()
        ops = size = 0
        while self._queue and len(batch) < MAX_MEMBERS:
            p = self._queue[0]
            if p.dropped():
                self._queue.popleft()
                continue
            if batch and (max(ops, p.ops) + len(batch) + 1 > MAX_OPS
                          or size + p.size > MAX_BYTES
                          or not p.writes.isdisjoint(writes) or not p.writes.isdisjoint(touches)
                          or not p.touches.isdisjoint(writes)):
                break
            batch.append(self._queue.popleft())
            writes |= p.writes
            touches |= p.touches
            ops, size = max(ops, p.ops), size + p.size
        return batch

    def _send_next(self, linger: bool = False) -> None:
        if not self._queue:
            self._flight = None
            return
        self._flight = asyncio.get_running_loop().create_task(self._send(linger),
                                                              name="etcd-txn-batch")

    async def _linger(self) -> None:
        """Wait (bounded) for more callers to share the next request."""
        wait_s = min(self._linger_max_s, self._rtt_s / 2)
        if not self._shared or len(self._queue) >= FILL or wait_s <= 0:
            return
        self._filled = asyncio.Event()
        try:
            await asyncio.wait_for(self._filled.wait(), wait_s)
        except TimeoutError:
            pass
        finally:
            self._filled = None

    async def _send(self, linger: bool) -> None:
        if linger:
            try:
                await self._linger()
            except asyncio.CancelledError:  # the queued callers go out in a flight of their own
                self._send_next()
                raise
        batch = self._take()
        if not batch:  # every queued caller was cancelled meanwhile
            self._flight = None
            return
        started = self._clock()
        self._shared = len(batch) > 1
        try:
            if len(batch) == 1:
                self._settle(batch[0], await self._call(batch[0].body, _still(batch)))
            else:
                await self._send_nested(batch)
        except NotSent:  # no member got it: one commit was no longer wanted at a fail-over
            self._unsend(batch)
        except BaseException as exc:  # every caller in it learns what a lone request would
            for i, p in enumerate(batch):
                self._settle(p, exc if i == 0 else _own_copy(exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._rtt_s = self._clock() - started
            self._send_next(linger=True)

    async def _send_nested(self, batch: list[Pending]) -> None:
        self.batches += 1
        try:
            data = await self._call(nested_request(p.body for p in batch), _still(batch))
        except StorageError as exc:
            if not any(r in str(exc) for r in REFUSED_WHOLE):
                raise
            # refused as a whole before anything applied (a member's own limits are lower
            # than these): each goes alone
            for p in batch:
                if p.dropped():  # (the ones before took time)
                    continue
                try:
                    self._settle(p, await self._call(p.body, _still([p])))
                except Exception as one:  # noqa: BLE001 - that caller's own error
                    self._settle(p, one)
            return
        answers = data.responses
        if len(answers) != len(batch):
            raise StorageError(f"etcd txn: {len(answers)} answers to {len(batch)} "
                               "nested transactions")
        for p, answer in zip(batch, answers, strict=True):
            self._settle(p, answer.response_txn)

    def _unsend(self, batch: list[Pending]) -> None:
        """A request no member received: its wanted-checked transactions are answered
        NotSent (each sender sends its own), the others go first in the queue again."""
        again = [p for p in batch if p.wanted is None and not p.answer.done()]
        for p in batch:
            if p.wanted is not None:
                self._settle(p, NotSent("etcd transaction no longer wanted by a fail-over "
                                        "to another member; not sent"))
        self._queue.extendleft(reversed(again))

    @staticmethod
    def _settle(p: Pending, outcome: pb.TxnResponse | BaseException) -> None:
        """Give `p`'s caller its answer (or error); retrieved here, so a caller cancelled
        meanwhile leaves no unretrieved exception behind."""
        if p.answer.done():
            return
        if not isinstance(outcome, BaseException):
            try:
                p.answer.set_result(answer_of(outcome, p.reads))
                return
            except StorageError as exc:
                outcome = exc
        p.answer.set_exception(outcome)
        p.answer.exception()

    async def close(self) -> None:
        """Wait for the batch in flight (its callers get its answer or its error)."""
        while self._flight is not None:
            flight = self._flight
            await asyncio.wait([flight])
            if self._flight is flight:
                break


def _still(batch: list[Pending]) -> Wanted | None:
    """Whether every transaction of `batch` is still wanted (None: no check needed)."""
    checked = [p.wanted for p in batch if p.wanted is not None]
    if not checked:
        return None
    return lambda: all(w() for w in checked)


def _own_copy(exc: BaseException) -> BaseException:
    """The same error as a new object for one more caller: each caller raises its own, so
    a traceback never grows another request's frames (same type, message and cause)."""
    if not isinstance(exc, Exception):
        return exc
    try:
        mine = copy.copy(exc)
    except Exception:  # noqa: BLE001 - an error type that cannot be rebuilt: shared, as before
        return exc
    mine.__traceback__ = None
    mine.__cause__, mine.__context__ = exc.__cause__, exc.__context__
    return mine
