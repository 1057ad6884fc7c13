"""Node health shared by the gateway's worker processes through one small mapped file.

Each `tessera gateway --workers N` process routes requests with its own `HealthTracker`;
without this page a node that one worker found dead (by a failed request or its probe)
stayed usable in the others until their own probes noticed, and a PUT placed there
failed its write quorum. Every state change is written here and every tracker adopts the
page's states before it decides, so one worker's discovery holds for all at once, and only
worker 0 runs the periodic probe.

Layout: a header (sequence number, slots in use) and one slot per node (id, state, failure
count, `time.monotonic()` of the last state change: the processes share the host's clock,
and the page is made anew by each gateway start). Writers hold an exclusive `flock` (state
changes are rare); readers take a consistent copy without a lock, as a seqlock: the
sequence is odd while a writer is inside, and a copy is kept only if it did not move.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from storage.sharedmap import map_shared

STATES = ("", "up", "suspect", "down", "out")  # state codes; 0 = empty slot
SLOTS = 1024  # nodes a page can hold (ids are never freed: a removed node keeps its slot)
ID_BYTES = 64
_HEAD = struct.Struct("<QI4x")  # sequence, slots in use
_SLOT = struct.Struct(f"<{ID_BYTES}sB3xId")  # node id, state code, failures, since
READ_TRIES = 1000  # a consistent copy is almost always the first one

Entry = tuple[str, int, float]  # state, failures, since (time.monotonic)


class SharedHealth:
    """The page of one gateway (see the module docstring); one instance per process."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        size = _HEAD.size + _SLOT.size * SLOTS
        self._fd, self._map = map_shared(path, size)
        self._index: dict[str, int] = {}  # node id -> slot, as far as this process has seen

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    def sequence(self) -> int:
        """Changes whenever any process writes: a reader compares it to skip a copy."""
        return int(_HEAD.unpack_from(self._map, 0)[0])

    def read(self) -> tuple[int, dict[str, Entry]] | None:
        """A consistent copy of every slot with the sequence it holds at; None if writers
        kept it moving (the caller keeps what it had)."""
        for _ in range(READ_TRIES):
            seq, used = _HEAD.unpack_from(self._map, 0)
            if seq & 1:
                continue
            entries: dict[str, Entry] = {}
            for i in range(min(used, SLOTS)):
                raw, code, failures, since = _SLOT.unpack_from(self._map,
                                                               _HEAD.size + i * _SLOT.size)
                nid = raw.rstrip(b"\0").decode()
                self._index[nid] = i
                if 0 < code < len(STATES):
                    entries[nid] = (STATES[code], failures, since)
            if _HEAD.unpack_from(self._map, 0)[0] == seq:
                return seq, entries
        return None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the writers' lock: read (`read`), decide and `write` as one step."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def write(self, node_id: str, state: str, failures: int, since: float) -> int:
        """Set one node's slot (under `locked`, after a `read`); returns the new sequence."""
        raw = node_id.encode()
        if len(raw) > ID_BYTES:
            raise ValueError(f"node id longer than {ID_BYTES} bytes: {node_id!r}")
        seq, used = _HEAD.unpack_from(self._map, 0)
        seq &= ~1  # odd here means a writer died between its two stores: even it out again
        slot = self._index.get(node_id)
        if slot is None:
            if used >= SLOTS:
                raise ValueError(f"more than {SLOTS} nodes in the shared health page")
            slot, used = used, used + 1
            self._index[node_id] = slot
        _HEAD.pack_into(self._map, 0, seq + 1, used)  # odd: readers retry
        _SLOT.pack_into(self._map, _HEAD.size + slot * _SLOT.size, raw, STATES.index(state),
                        min(failures, 0xFFFFFFFF), since)
        _HEAD.pack_into(self._map, 0, seq + 2, used)
        return int(seq + 2)
