"""Journal pages a snapshot read holds, kept in an anonymous local file instead of memory.

A read of a snapshot that holds a journal range, or a clone of it, replays the held pages
over the extents (storage/volume_held.py). Their total is the unique pages of every level's
range, unbounded by anything the reader sets (the origin writer's `max_dirty`, per level),
so the handle keeps only an index (extent, offset, length) -> position here and reads a page
back when an extent is read. The file is unlinked at creation: it goes with the process.
"""

from __future__ import annotations

import os
import tempfile


class PageSpill:
    """An append-only local file of page bytes, read back by position."""

    def __init__(self) -> None:
        self._f = tempfile.TemporaryFile(prefix="tessera-held-")  # closed by close()
        self._end = 0

    def put(self, data: bytes | memoryview) -> int:
        """Store `data`; returns its position."""
        at = self._end
        os.pwrite(self._f.fileno(), data, at)
        self._end += len(data)
        return at

    def get(self, at: int, n: int) -> bytes:
        data = os.pread(self._f.fileno(), n, at)
        if len(data) != n:
            raise OSError(f"held page spill truncated at {at} (+{n})")
        return data

    @property
    def size(self) -> int:
        return self._end

    def close(self) -> None:
        self._f.close()
