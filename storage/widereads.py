"""Large request bodies received in large pieces.

asyncio receives at most 256 KiB per `recv` and aiohttp pauses a connection once 128 KiB
wait unread, so a body of many MiB reaches the handler as thousands of chunks, each one a
trip through the event loop, the HTTP parser and the handler's loop (on a node, a 1 MiB
frame of a shard PUT arrived as a 256 KiB chunk plus a few bytes, then the next). Python's
per-chunk work was most of the CPU that moving the bytes cost. `wide_reads` lets one
connection take up to `nbytes` per `recv` and keep up to twice that buffered while one
large body streams in, then gives the connection its defaults back.

Each widened connection may hold about three times `nbytes` (a full buffer plus the read
in hand) where a default one holds about 512 KiB, so the widening is bounded per process:
`WideBudget` lends at most `WIDE_BUDGET_BYTES` in all, and a body that finds it spent is
received with the defaults (slower to take in, never refused).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

WIDE_READ_BYTES = 1024 * 1024  # per recv while a large body streams in
WIDE_BODY_BYTES = 4 * 1024 * 1024  # bodies from this size on are read wide
WIDE_BUDGET_BYTES = 64 * 1024 * 1024  # widened buffering all connections may hold at once


class WideBudget:
    """Bytes of widened buffering lent out in this process (one event loop's, or a few:
    taking and giving are single attribute updates under the GIL, never awaited)."""

    def __init__(self, limit: int = WIDE_BUDGET_BYTES) -> None:
        self.limit = limit
        self.lent = 0

    def take(self, nbytes: int) -> bool:
        """Lend `nbytes` if they fit under the limit."""
        if self.lent + nbytes > self.limit:
            return False
        self.lent += nbytes
        return True

    def give(self, nbytes: int) -> None:
        self.lent -= nbytes


BUDGET = WideBudget()  # the process's


@contextlib.contextmanager
def wide_reads(transport: Any, content: Any, nbytes: int = WIDE_READ_BYTES,
               budget: WideBudget | None = None) -> Iterator[None]:
    """Receive up to `nbytes` per read on `transport` (an asyncio selector transport: its
    `max_size` is the size passed to `recv`) and let `content` (an aiohttp StreamReader)
    buffer up to 2 * `nbytes` before it pauses the connection, for the `with` block.

    A transport without `max_size` (another event loop) keeps its own read size; the
    StreamReader's limit is raised either way (its public `set_read_chunk_size`). When
    `budget` (default: the process's) cannot lend 3 * `nbytes`, nothing is widened.
    """
    budget = BUDGET if budget is None else budget
    cost = 3 * nbytes
    if not budget.take(cost):
        yield  # defaults: many large bodies at once do not each buffer megabytes
        return
    try:
        with _widened(transport, content, nbytes):
            yield
    finally:
        budget.give(cost)


@contextlib.contextmanager
def _widened(transport: Any, content: Any, nbytes: int) -> Iterator[None]:
    widened = False
    if transport is not None and isinstance(getattr(transport, "max_size", None), int) \
            and transport.max_size < nbytes:
        transport.max_size = nbytes  # shadows the class's 256 KiB for this connection
        widened = True
    content.set_read_chunk_size(nbytes)
    try:
        yield
    finally:
        if widened:
            with contextlib.suppress(AttributeError):
                del transport.max_size  # back to the class default for the next request
