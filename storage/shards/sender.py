"""Whole-shard PUTs over a lean HTTP/1.1 client: the write side of `storage.shards.fetch`.

A shard PUT through a general HTTP client costs the gateway about as much CPU as the node
spends storing a 256 KiB shard (request and response objects, header multidicts, timers,
payload writers, a body task). A one-segment object (up to `segment_size`, 1 MiB by default)
is six such requests, so its shards, whole in memory once encoded, go out here instead: one
`writelines` of the request head, the shard file and its body MAC trailer, then the answer's
head and small JSON body parsed from the bytes received. Same request on the wire as
`NodeClient.put_shard` sends (signed headers, `Content-Length`, trailer MAC), so nodes see
no difference.

Keep-alive connections are pooled per node; a reused connection the node closed before
answering anything is replaced by a new one, once, with a freshly signed request (the node
never accepted the first: a replay of its nonce would be refused).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from storage.config import NodeSpec
from storage.errors import StorageError
from storage.shards.connpool import (
    HEAD_BYTES,
    MAX_IN_FLIGHT,
    ConnPool,
    FetchError,
    NodeConn,
    expire,
    parse_head,
)

MAX_ANSWER_BYTES = 64 * 1024  # a PUT's JSON answer (or error) is far smaller

# builds the request's pieces (head, body, trailer), or the three as one view
Request = Callable[[], list[bytes | memoryview]]
# one request's outcome in `request_many`: (status, answer), or why there is none
Outcome = tuple[int, bytes] | StorageError | TimeoutError


class _Conn(NodeConn, asyncio.Protocol):
    """One keep-alive connection; carries one request and its answer at a time."""

    def _reset(self) -> None:
        super()._reset()
        self._buf = bytearray()
        self._body_at = -1
        self._length = 0

    @property
    def answer(self) -> bytes:
        return bytes(self._buf[self._body_at:self._body_at + self._length])

    def send(self, pieces: list[bytes | memoryview]) -> None:
        self._reset()
        assert self.transport is not None
        if len(pieces) == 1:  # one view of a `ShardSlot`: no join (writelines copies)
            self.transport.write(pieces[0])
        else:
            self.transport.writelines(pieces)

    async def wait(self, timeout_s: float) -> None:
        """Until the whole answer arrived or the connection failed."""
        if not self.finished and self.error is None:
            await self._sleep(timeout_s)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.got_any = True
        if self.finished:
            self._fail(FetchError("?", "bytes nobody asked for"))
            return
        self._buf += data
        try:
            self._parse()
        except FetchError as exc:
            self._fail(exc)
            return
        if self.finished:
            self._wake()

    # -- internals -------------------------------------------------------------------------

    def _parse(self) -> None:
        if self._body_at < 0:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) >= HEAD_BYTES:
                    raise FetchError("?", "response head too large")
                return
            head = parse_head(bytes(self._buf[:end]))
            if head.chunked:
                raise FetchError("?", "answer without a Content-Length")
            self.keep_alive = head.keep_alive
            length = head.length
            if length is None or length > MAX_ANSWER_BYTES:
                raise FetchError("?", "answer without a usable Content-Length")
            self.status, self._length, self._body_at = head.status, length, end + 4
        have = len(self._buf) - self._body_at
        if have > self._length:
            raise FetchError("?", "more bytes than the Content-Length")
        self.finished = have == self._length


class ShardSender:
    """Whole-body requests to nodes over pooled keep-alive connections."""

    def __init__(self, read_timeout_s: float = 15.0, connect_timeout_s: float = 3.0,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._read_timeout = read_timeout_s
        self._pool: ConnPool[_Conn] = ConnPool(_Conn, connect_timeout_s, max_in_flight)

    async def request(self, node: NodeSpec, build: Request, first: int = 0
                      ) -> tuple[int, bytes]:
        """Send the request `build()` makes; (status, answer body). FetchError when the
        node cannot be reached, answers badly, or is silent for the read timeout. At most
        `connpool.MAX_IN_FLIGHT` requests to one node at once; the rest queue. `first=1`:
        the request already failed once on a reused connection (no second retry)."""
        async with self._pool.slot(node):
            return await self._request(node, build, first)

    async def request_many(self, items: Sequence[tuple[NodeSpec, Request]],
                           stall_s: float) -> list[Outcome]:
        """Each `(node, build)` request as `request` sends it, all from this coroutine: a
        node with a free slot and an idle connection gets its request written at once and
        every such answer is awaited on one future and one timer handle (no task, no
        `asyncio.timeout`, no gather per request). A request that cannot go that way (no
        idle connection, the node's slot full) or whose reused connection failed before
        any answer byte (retried once, as `request` does) runs as `request` in a task.
        No answer within `stall_s` (everything included): TimeoutError. Cancelled (the
        client went away): the connections written to are aborted, the tasks cancelled."""
        loop = asyncio.get_running_loop()
        out: list[Outcome | None] = [None] * len(items)
        live: dict[int, _Conn] = {}
        tasks: dict[int, asyncio.Task[Outcome]] = {}
        group = _Group()
        end = loop.time() + stall_s
        try:
            for i, (node, build) in enumerate(items):
                sem = self._pool.slot(node)
                conn = None if sem.locked() else self._pool.take_idle(node)
                if conn is None:
                    tasks[i] = loop.create_task(self._bounded(node, build, end))
                    continue
                await sem.acquire()  # free (checked above): returns without suspending
                conn.send(build())
                conn._waiter = _Member(group)  # type: ignore[assignment]
                live[i] = conn
            read_end = loop.time() + self._read_timeout
            late = False
            while live:
                if group.fired:  # answers or failures came in (even with the deadline)
                    for i in [i for i, c in live.items() if c._waiter.done()]:  # type: ignore[union-attr]
                        node, build = items[i]
                        out[i] = self._collect(node, live.pop(i))
                        if isinstance(out[i], FetchError) and out[i].fresh:  # type: ignore[union-attr]
                            tasks[i] = loop.create_task(self._bounded(node, build, end, 1))
                    group.fired = 0
                    continue
                if late:
                    break
                waiter = group.waiter = loop.create_future()
                timer = loop.call_at(min(end, read_end), expire, waiter)
                try:
                    await waiter
                except TimeoutError:
                    late = True
                finally:
                    timer.cancel()
                    group.waiter = None
            for i, conn in live.items():  # silent past the deadline
                node = items[i][0]
                conn.close()
                self._pool.slot(node).release()
                out[i] = (FetchError(node.id, f"no answer for {self._read_timeout:.0f}s")
                          if read_end <= end else TimeoutError())
            live.clear()
            for i, task in tasks.items():
                out[i] = await task
            return out  # type: ignore[return-value]
        finally:
            for i, conn in live.items():  # cancelled mid-wait
                conn.close()
                self._pool.slot(items[i][0]).release()
            for task in tasks.values():
                task.cancel()

    def _collect(self, node: NodeSpec, conn: _Conn) -> Outcome:
        """A `request_many` exchange that ended: its answer, or its error (the connection
        closed); the node's slot is given back either way."""
        conn._waiter = None
        self._pool.slot(node).release()
        if conn.error is None and conn.finished:
            status, answer = conn.status, conn.answer
            self._pool.release(node, conn)
            return status, answer
        conn.close()
        err = conn.error
        if not isinstance(err, FetchError):
            return FetchError(node.id, f"{type(err).__name__}: {err}")
        return FetchError(node.id, err.reason, err.status, err.fresh)

    async def _bounded(self, node: NodeSpec, build: Request, end: float,
                       first: int = 0) -> Outcome:
        """`request` until the loop time `end`; its outcome (never raises but to cancel)."""
        try:
            async with asyncio.timeout_at(end):
                return await self.request(node, build, first)
        except (StorageError, TimeoutError) as exc:
            return exc

    async def _request(self, node: NodeSpec, build: Request, first: int = 0
                       ) -> tuple[int, bytes]:
        for attempt in range(first, 2):
            conn, reused = await self._pool.acquire(node)
            done = False
            try:
                conn.send(build())
                try:
                    await conn.wait(self._read_timeout)
                except TimeoutError:
                    raise FetchError(node.id, f"no answer for {self._read_timeout:.0f}s") \
                        from None
                if conn.error is not None:
                    err = conn.error
                    if not isinstance(err, FetchError):  # the sender fails only with these
                        raise err
                    if reused and err.fresh and attempt == 0:
                        continue
                    raise FetchError(node.id, err.reason, err.status, err.fresh) from None
                done = True
                status, answer = conn.status, conn.answer
                self._pool.release(node, conn)
                return status, answer
            finally:
                if not done:
                    conn.close()
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every idle connection."""
        self._pool.close()


class _Group:
    """The `request_many` exchanges still waited on, and the one future that wakes it."""

    __slots__ = ("fired", "waiter")

    def __init__(self) -> None:
        self.fired = 0  # exchanges ended since the group last looked
        self.waiter: asyncio.Future[None] | None = None


class _Member:
    """Stands in for a connection's waiter future in `request_many`: the connection's
    `_wake` (answer complete, failure, close) marks it done and wakes the group once."""

    __slots__ = ("_done", "_group")

    def __init__(self, group: _Group) -> None:
        self._group, self._done = group, False

    def done(self) -> bool:
        return self._done

    def set_result(self, _: None) -> None:
        self._done = True
        self._group.fired += 1
        w = self._group.waiter
        if w is not None and not w.done():
            w.set_result(None)
