"""What a restart finds in one pack (issue 17): its records, read from its footer when it has
one that checks, else by a scan; a torn tail (bytes after the last complete record, never
acknowledged) copied to `quarantine/` and cut off; damage inside kept for scrub.

Why a module of its own: recovery reads a pack as it is on disk and decides what may be
kept, before any committer runs; `nodes.packstore` applies what it returns to its index.
Bytes no index names are never just dropped: they are copied aside first (`keep_aside`).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from nodes import packformat as pf
from nodes.packdamage import Ids, could_hold, held_ids
from nodes.shardfile import fsync_dir

PACK_NAME = re.compile(r"^([0-9a-f]{16})\.pack\Z")


def pack_name(seq: int) -> str:
    return f"{seq:016x}.pack"


@dataclass
class Damage:
    """What a restart's scan found wrong inside one pack (for scrub and operators)."""

    seq: int
    gaps: list[tuple[int, int]] = field(default_factory=list)
    bad: list[pf.Record] = field(default_factory=list)
    torn: tuple[int, int] | None = None  # [end, size) set aside and cut off
    # each damaged range [a, b) and the ids its records could have been (None: any;
    # `nodes.packdamage`), taken while its bytes were at hand
    held: list[tuple[int, int, Ids]] = field(default_factory=list)
    missing: bool = False  # the whole pack is gone (`nodes.packdrops`): it could hold anything
    # the torn tail is in a pack that is not the newest (set by the store, which knows):
    # only the newest pack is written at its end, so this one lost its end (its footer,
    # acknowledged records), not a write in flight (review21h H3)
    lost_end: bool = False

    @property
    def harmful(self) -> bool:
        """Whether it may have cost acknowledged records (gaps, bad records, the pack
        gone, the end of a pack no longer written to): a torn tail in the newest pack never
        does, it is what any crash mid-write leaves."""
        return self.missing or self.lost_end or bool(self.gaps or self.bad)

    def could_hold(self, sid: str, after: int = -1) -> bool:
        """Whether this damage could have held a record of `sid` ending past `after`."""
        return self.missing or could_hold(self.held, sid, after)


@dataclass
class Recovered:
    """One pack as a restart found it."""

    records: list[pf.Record]  # in order, footers left out
    size: int  # bytes it holds from now on (a torn tail cut off)
    sealed: bool  # indexed from a footer that checks: no more appends
    damage: Damage | None  # None when the scan found nothing wrong


def recover(seq: int, fd: int, quarantine_dir: Path) -> Recovered:
    """Read pack `seq` (open read-write on `fd`): its footer if whole, else a scan whose
    torn tail is set aside (durably) and truncated."""
    size = os.fstat(fd).st_size

    def read_at(off: int, n: int) -> bytes:
        return os.pread(fd, n, off)
    listed = pf.read_footer(read_at, size)
    if listed is not None:
        return Recovered(listed, size, True, None)
    got = pf.scan(read_at, size)
    harm = Damage(seq, got.gaps, got.bad)
    harm.held = [(a, b, held_ids(read_at, a, b)) for a, b in
                 sorted([*got.gaps, *((r.offset, r.end) for r in got.bad)])]
    if got.end < size:
        harm.held.append((got.end, size, held_ids(read_at, got.end, size, torn=True)))
        set_aside(quarantine_dir, seq, fd, got.end, size)
        harm.torn = (got.end, size)
    return Recovered([rec for rec in got.records if rec.kind != pf.FOOTER], got.end, False,
                     harm if harm.gaps or harm.bad or harm.torn else None)


def set_aside(quarantine_dir: Path, seq: int, fd: int, start: int, end: int,
              why: str = "torn") -> None:
    """Copy a torn tail to quarantine (durably), then cut the pack back to `start`."""
    keep_aside(quarantine_dir, seq, fd, start, end, why)
    os.ftruncate(fd, start)
    os.fsync(fd)


def keep_aside(quarantine_dir: Path, seq: int, fd: int, start: int, end: int,
               why: str) -> None:
    """Copy bytes [start, end) of pack `seq` to `quarantine/<pack>.<start>.<ns>.<why>`,
    durably (file and directory fsynced): bytes no index names are never just lost."""
    dest = quarantine_dir / f"{pack_name(seq)}.{start}.{time.time_ns()}.{why}"
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        pos = start
        while pos < end:
            chunk = os.pread(fd, min(pf.SEARCH_CHUNK, end - pos), pos)
            if not chunk:
                break
            os.write(out, chunk)
            pos += len(chunk)
        os.fsync(out)
    finally:
        os.close(out)
    fsync_dir(quarantine_dir)
