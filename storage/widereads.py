"""Large request bodies received in large pieces.

asyncio receives at most 256 KiB per `recv` and aiohttp pauses a connection once 128 KiB
wait unread, so a body of many MiB reaches the handler as thousands of chunks, each one a
trip through the event loop, the HTTP parser and the handler's loop (on a node, a 1 MiB
frame of a shard PUT arrived as a 256 KiB chunk plus a few bytes, then the next). Python's
per-chunk work was most of the CPU that moving the bytes cost. `wide_reads` lets one
connection take up to `nbytes` per `recv` and keep up to twice that buffered while one
large body streams in, then gives the connection its defaults back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

WIDE_READ_BYTES = 1024 * 1024  # per recv while a large body streams in
WIDE_BODY_BYTES = 4 * 1024 * 1024  # bodies from this size on are read wide


@contextlib.contextmanager
def wide_reads(transport: Any, content: Any, nbytes: int = WIDE_READ_BYTES) -> Iterator[None]:
    """Receive up to `nbytes` per read on `transport` (an asyncio selector transport: its
    `max_size` is the size passed to `recv`) and let `content` (an aiohttp StreamReader)
    buffer up to 2 * `nbytes` before it pauses the connection, for the `with` block.

    A transport without `max_size` (another event loop) keeps its own read size; the
    StreamReader's limit is raised either way (its public `set_read_chunk_size`).
    """
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
