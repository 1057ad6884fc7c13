"""Concurrent etcd transactions sent together: one Txn whose success ops are the callers'
transactions nested (etcd 3.3+), so N commits cost one HTTP request, one JSON-gateway call,
one Raft entry and one apply instead of N.

Each nested transaction keeps its own compares and its own success or failure branch, so a
caller sees exactly what its own Txn would have done. etcd evaluates every compare of a
request before applying any op, and applies the nested ops in order; so transactions share a
batch only when none writes a key another one writes, compares or reads (then any order of
them gives the same result, and no failure read sees another member's write). A transaction
that conflicts waits for the next batch, as do all after it (per-key order is kept). One
batch is in flight at a time: callers arriving meanwhile are sent together when it returns,
so under no concurrency a transaction goes out alone at once, as a plain Txn.

A batch that fails (connection, timeout, no leader) fails every caller in it with the same
error a lone request would have raised: none of them knows whether it applied.
"""

from __future__ import annotations

import asyncio
import binascii
import copy
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from storage.errors import StorageError
from storage.metadata import Item, Txn

# etcd checks a nested Txn against --max-txn-ops minus its parent's op count (default 128):
# members and their ops are kept under that; a bigger transaction goes alone.
MAX_MEMBERS = 48
MAX_MEMBER_OPS = 64
MAX_OPS = 128
MAX_BYTES = 512 * 1024  # raw key + value bytes per batch (etcd refuses requests over 1.5 MiB)
# etcd's refusals of a whole request before it applies anything (a cluster configured with
# lower --max-txn-ops or --max-request-bytes than the above): its members then go alone
REFUSED_WHOLE = ("too many operations in txn request", "request is too large",
                 "received message larger than max")

Call = Callable[[str, dict[str, Any], bool], Awaitable[dict[str, Any]]]


def b64(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def unb64(text: str | None) -> bytes:
    # binascii directly: base64.b64decode's checks cost more than the decoding of a key,
    # and a listing page decodes two per record
    return binascii.a2b_base64(text) if text else b""


def item_of(kv: dict[str, Any]) -> Item:
    """An Item from a JSON-gateway KeyValue."""
    return Item(unb64(kv.get("key")), unb64(kv.get("value")), int(kv.get("mod_revision", 0)))


def compare_rev(key: bytes, rev: int) -> dict[str, Any]:
    """key's mod_revision == rev; an absent key has mod_revision 0."""
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(rev)}


@dataclass
class Pending:
    """One caller's transaction: its JSON body, the keys it writes and the keys it compares
    or reads (for conflicts), its size, and where its answer goes."""

    body: dict[str, Any]
    reads: tuple[bytes, ...]
    writes: frozenset[bytes]
    touches: frozenset[bytes]
    ops: int
    size: int
    answer: asyncio.Future[tuple[bool, dict[bytes, Item | None]]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())

    @classmethod
    def of(cls, txn: Txn, reads: tuple[bytes, ...]) -> Pending:
        deletes = set(txn.deletes)
        puts = {k: v for k, v in txn.puts.items() if k not in deletes}  # put-then-delete = deleted
        ops: list[dict[str, Any]] = [
            {"request_put": {"key": b64(k), "value": b64(v)}} for k, v in puts.items()]
        ops += [{"request_delete_range": {"key": b64(k)}} for k in dict.fromkeys(txn.deletes)]
        body: dict[str, Any] = {
            "compare": [compare_rev(k, rev) for k, rev in txn.compares.items()], "success": ops}
        if reads:
            body["failure"] = [{"request_range": {"key": b64(k)}} for k in reads]
        size = sum(len(k) + len(v) for k, v in puts.items()) + sum(len(k) for k in deletes)
        return cls(body, reads, frozenset(puts) | deletes, frozenset(txn.compares) | set(reads),
                   max(len(ops), len(txn.compares), len(reads)), size)

    @property
    def alone(self) -> bool:
        """Too big to share a request."""
        return self.ops > MAX_MEMBER_OPS or self.size > MAX_BYTES // 4


def answer_of(data: dict[str, Any], reads: tuple[bytes, ...]) -> tuple[bool, dict[bytes, Item | None]]:
    """A TxnResponse (top level or nested) as `txn_or_read`'s result."""
    if data.get("succeeded", False):
        return True, {}
    answers = data.get("responses") or []
    if len(answers) != len(reads):
        raise StorageError(f"etcd txn: {len(answers)} answers to {len(reads)} reads")
    seen: dict[bytes, Item | None] = {}
    for key, answer in zip(reads, answers, strict=True):
        kvs = (answer.get("response_range") or {}).get("kvs") or []
        seen[key] = item_of(kvs[0]) if kvs else None
    return False, seen


class TxnBatcher:
    """Sends callers' transactions through `call`, concurrent ones nested in one Txn."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self._queue: deque[Pending] = deque()
        self._flight: asyncio.Task[None] | None = None
        self.batches = 0  # requests that carried more than one transaction (tests)

    async def run(self, txn: Txn, reads: tuple[bytes, ...]
                  ) -> tuple[bool, dict[bytes, Item | None]]:
        p = Pending.of(txn, reads)
        if p.alone:
            return answer_of(await self._call("/kv/txn", p.body, False), reads)
        self._queue.append(p)
        if self._flight is None:
            self._send_next()
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

    def _send_next(self) -> None:
        batch = self._take()
        if not batch:
            self._flight = None
            return
        self._flight = asyncio.get_running_loop().create_task(self._send(batch),
                                                              name="etcd-txn-batch")

    async def _send(self, batch: list[Pending]) -> None:
        try:
            if len(batch) == 1:
                self._settle(batch[0], await self._call("/kv/txn", batch[0].body, False))
            else:
                await self._send_nested(batch)
        except BaseException as exc:  # every caller in it learns what a lone request would
            for i, p in enumerate(batch):
                self._settle(p, exc if i == 0 else _own_copy(exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._send_next()

    async def _send_nested(self, batch: list[Pending]) -> None:
        body = {"compare": [], "success": [{"request_txn": p.body} for p in batch]}
        self.batches += 1
        try:
            data = await self._call("/kv/txn", body, False)
        except StorageError as exc:
            if not any(r in str(exc) for r in REFUSED_WHOLE):
                raise
            # refused as a whole before anything applied (a member's own limits are lower
            # than these): each goes alone
            for p in batch:
                try:
                    self._settle(p, await self._call("/kv/txn", p.body, False))
                except Exception as one:  # noqa: BLE001 - that caller's own error
                    self._settle(p, one)
            return
        answers = data.get("responses") or []
        if len(answers) != len(batch):
            raise StorageError(f"etcd txn: {len(answers)} answers to {len(batch)} "
                               "nested transactions")
        for p, answer in zip(batch, answers, strict=True):
            self._settle(p, answer.get("response_txn") or {})

    @staticmethod
    def _settle(p: Pending, outcome: dict[str, Any] | BaseException) -> None:
        """Give `p`'s caller its answer (or error); retrieved here, so a caller cancelled
        meanwhile leaves no unretrieved exception behind."""
        if p.answer.done():
            return
        if isinstance(outcome, dict):
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
