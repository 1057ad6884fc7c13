"""A disk's pack index in little memory (issue 17): shard id -> `PackLoc` for millions of
packed shards, where a dict of tuples costs ~300 B a shard (benchmarks/pack_restart.py).

- **Base**: every shard at the last merge, sorted: keys in one bytes blob, 19 B each (the
  stripe's 16 bytes, then the shard index as ASCII digits padded with NULs: the order of
  the id strings), the locations in arrays (seq 4 B, offset 8 B, length 4 B, time 8 B):
  43 B a shard. A lookup bisects it.
- **Changes** since: a dict, id -> PackLoc, or None for an id removed from the base. When
  they reach `MERGE_SHARE` of the base (at least `MERGE_MIN`), they are merged into a new
  base: the unchanged runs are copied as slices, so a merge costs a bisect per change and
  a memcpy of the base.
- **Threads**: one writer (the packs' committer, or `open` before it starts); readers on
  other threads read the changes, then the base. A merge assigns the new base, then new
  empty changes: a reader sees the old changes over either base (each complete, the new one
  holding them) or the new changes over the new base.
"""

from __future__ import annotations

import contextlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, MutableMapping
from typing import NamedTuple

KEY = 19
MERGE_MIN = 4096
BULK_MERGE = 1 << 20  # while loading (a restart): changes held before a merge
MERGE_SHARE = 8  # merge when the changes are a 1/MERGE_SHARE of the base


class PackLoc(NamedTuple):
    """Where the newest PUT of a shard is: its body's bytes [offset, offset+length)."""

    seq: int
    offset: int
    length: int
    time_ns: int


def key_of(sid: str) -> bytes:
    """A canonical shard id's 19-byte key (same order as the id strings)."""
    stripe, _, index = sid.partition(".")
    return bytes.fromhex(stripe) + index.encode().ljust(3, b"\0")


def sid_of(key: bytes) -> str:
    return key[:16].hex() + "." + key[16:].rstrip(b"\0").decode()


class _Base:
    """A sorted, immutable once published, run of keys and locations."""

    __slots__ = ("keys", "length", "offset", "seq", "time_ns")

    def __init__(self) -> None:
        self.keys = b""
        self.seq, self.offset = array("I"), array("Q")
        self.length, self.time_ns = array("I"), array("Q")

    def __len__(self) -> int:
        return len(self.seq)

    def loc(self, i: int) -> PackLoc:
        return PackLoc(self.seq[i], self.offset[i], self.length[i], self.time_ns[i])

    def key(self, i: int) -> bytes:
        return self.keys[i * KEY:(i + 1) * KEY]

    def find(self, key: bytes) -> int:
        """The position of `key`, or -1."""
        i = bisect_left(_Keys(self), key)
        return i if i < len(self) and self.key(i) == key else -1


class _Keys:
    """The base's keys as a sequence (for bisect)."""

    def __init__(self, base: _Base) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> bytes:
        return self.base.key(i)


class _Sids(_Keys):
    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        return sid_of(self.base.key(i))


class PackIndex(MutableMapping[str, PackLoc]):
    """shard id -> PackLoc (module doc); iteration is in id order."""

    def __init__(self, merge_min: int = MERGE_MIN) -> None:
        self.merge_min = merge_min
        self._base = _Base()
        self._changes: dict[str, PackLoc | None] = {}
        self._len = 0
        self.merges = 0

    def get(self, sid: str, default: PackLoc | None = None) -> PackLoc | None:  # type: ignore[override]
        changes = self._changes  # the changes first, then the base (module doc)
        base = self._base
        got = changes.get(sid, False)
        if got is not False:
            return default if got is None else got
        i = base.find(key_of(sid)) if len(base) else -1
        return default if i < 0 else base.loc(i)

    def __getitem__(self, sid: str) -> PackLoc:
        got = self.get(sid)
        if got is None:
            raise KeyError(sid)
        return got

    def __contains__(self, sid: object) -> bool:
        return isinstance(sid, str) and self.get(sid) is not None

    def __setitem__(self, sid: str, loc: PackLoc) -> None:
        if self.get(sid) is None:
            self._len += 1
        self._changes[sid] = loc
        self._maybe_merge()

    def __delitem__(self, sid: str) -> None:
        if self.get(sid) is None:
            raise KeyError(sid)
        self._len -= 1
        if len(self._base) and self._base.find(key_of(sid)) >= 0:
            self._changes[sid] = None
        else:
            del self._changes[sid]
        self._maybe_merge()

    def total_length(self) -> int:
        """The sum of every location's length (a node's usage) without a lookup each."""
        changes = dict(self._changes)
        base = self._base
        total = sum(base.length)
        for sid, loc in changes.items():
            i = base.find(key_of(sid)) if len(base) else -1
            total += (0 if loc is None else loc.length) - (base.length[i] if i >= 0 else 0)
        return total

    @contextlib.contextmanager
    def bulk(self) -> Iterator[None]:
        """Many changes in a row (a restart's load): merged rarely, then once at the end
        (an empty base makes each change a dict operation)."""
        saved, self.merge_min = self.merge_min, BULK_MERGE
        try:
            yield
        finally:
            self.merge_min = saved
            self.merge()

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[str]:
        return iter(self.after("", self._len))

    def after(self, after: str, limit: int) -> list[str]:
        """The first `limit` ids greater than `after`, in order (a listing page)."""
        changes = dict(self._changes)
        base = self._base
        added = sorted(s for s, loc in changes.items() if loc is not None and s > after)
        out: list[str] = []
        i = bisect_right(_Sids(base), after)
        j = 0
        while len(out) < limit and (i < len(base) or j < len(added)):
            sid = sid_of(base.key(i)) if i < len(base) else None
            if sid is None or (j < len(added) and added[j] <= sid):
                if sid == added[j]:
                    i += 1  # changed since the merge: listed once
                out.append(added[j])
                j += 1
            else:
                i += 1
                if sid not in changes:  # a None change: removed
                    out.append(sid)
        return out

    def _maybe_merge(self) -> None:
        if len(self._changes) >= max(self.merge_min, len(self._base) // MERGE_SHARE):
            self.merge()

    def merge(self) -> None:
        """Fold the changes into a new base (the writer's thread)."""
        old, changes = self._base, self._changes
        keys: list[bytes] = []
        new = _Base()
        pos = 0
        view = _Keys(old)

        def copy(a: int, b: int) -> None:
            if b > a:
                keys.append(old.keys[a * KEY:b * KEY])
                new.seq.extend(old.seq[a:b])
                new.offset.extend(old.offset[a:b])
                new.length.extend(old.length[a:b])
                new.time_ns.extend(old.time_ns[a:b])
        for sid in sorted(changes):
            key = key_of(sid)
            i = bisect_left(view, key, lo=pos)
            copy(pos, i)
            pos = i + 1 if i < len(old) and old.key(i) == key else i
            loc = changes[sid]
            if loc is not None:
                keys.append(key)
                new.seq.append(loc.seq)
                new.offset.append(loc.offset)
                new.length.append(loc.length)
                new.time_ns.append(loc.time_ns)
        copy(pos, len(old))
        new.keys = b"".join(keys)
        self._base = new
        self._changes = {}
        self.merges += 1
