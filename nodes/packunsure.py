"""Where a failed group began in a pack it could not be cut back from (`packs/unsure`), so a
restart sets those bytes aside as a torn tail instead of indexing them (review21h H1).

Why: a group whose write or fdatasync failed, and whose cut-back (ftruncate) failed too, is
left in its pack, never acknowledged and maybe never durable. The running store never
indexes it (`PackStore._unsure`), but a restart's scan would: its records would then
supersede the durable ones they replace, and hole punching (`nodes.packpunch`) would zero
those; a power cut that loses the failed group's bytes would then leave zeros as the shard.
So the start is written here (atomic, fsynced: `nodes.smallrecord`) before the store writes
on, and at open each marked pack is cut back to it (the bytes copied to `quarantine/`
first), retired (never appended to again, so a mark left behind cuts nothing new) and the
record cleared. A clear that fails (a full disk still starts) leaves marks on disk, so the
store then numbers new packs above every mark (review21h H4's rule for `packs/dropped`). A
record that fails its check is treated as naming nothing (logged) and rewritten empty.

A mark also names where the failed group ends and its newest record's write time: code from
before this record ignores it and leaves it in place, so after a downgrade and an upgrade
the marked pack may hold records written since (the downgraded node indexed the group and
wrote on after it, acknowledged). A mark is applied only while the pack ends within the group
and no record from its start is newer than the group or a footer (`stale`); else it is
dropped, logged, and the pack kept as the downgraded node left it (a durable record it let
be punched is then gone, not corrupt: `nodes.packpunch.body_punched`). A mark of the first
format (no end, no time) is applied as before.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nodes import packformat as pf
from nodes.smallrecord import pairs, read_record, write_record

log = logging.getLogger(__name__)

UNSURE_NAME = "unsure"  # below `packs/`; never a pack name (`packrecovery.PACK_NAME`)
_HEAD = b"tessera-pack-unsure 2 "  # lines "seq start end time_ns"
_HEAD_1 = b"tessera-pack-unsure 1 "  # lines "seq start" (session 21's records)

# (start, the group's end, its newest record's write time; None, None: a first-format mark)
Mark = tuple[int, int | None, int | None]


class Unsure:
    """The failed-group starts of one store: pack seq -> (offset, write time) (`load`
    before use)."""

    def __init__(self, pack_dir: Path) -> None:
        self.path = pack_dir / UNSURE_NAME
        self.starts: dict[int, Mark] = {}
        self._bad = False  # the record on disk fails its check (rewritten empty at clear)

    def load(self) -> dict[int, Mark]:
        """The starts the record names (a copy; nothing when absent or failing its check)."""
        exists, body = read_record(self.path, _HEAD)
        got: list[tuple[int, Mark]] | None = None if body is None else _triples(body)
        if got is None and exists:
            _, old = read_record(self.path, _HEAD_1)
            got = None if old is None else [(seq, (start, None, None))
                                            for seq, start in pairs(old) or []]
        self._bad = exists and got is None
        if self._bad:
            log.warning("pack unsure record %s fails its check: ignored", self.path)
        self.starts = dict(got or [])
        return dict(self.starts)

    def add(self, seq: int, start: int, end: int, time_ns: int) -> None:
        """Record that pack `seq` holds a failed group in [start, end), its newest record
        written at `time_ns`, durably (OSError: not recorded)."""
        self.starts[seq] = (start, end, time_ns)
        self._save()

    def clear(self) -> None:
        """Forget every start, durably (OSError: the record stays)."""
        if self.starts or self._bad:  # else nothing to write (most opens)
            self.starts = {}  # (the marks' ranges are set aside already: losing them is
            self._save()  # harmless; keeping them on disk is what `PackStore` guards)
            self._bad = False

    def _save(self) -> None:
        write_record(self.path, _HEAD, "".join(
            f"{seq} {start} {end} {time_ns}\n"
            for seq, (start, end, time_ns) in sorted(self.starts.items())
            if end is not None).encode())


def stale(read_at: pf.ReadAt, size: int, mark: Mark) -> bool:
    """Whether pack bytes [start, size) hold what the marked group cannot be (written
    since, by code that ignored the mark: bytes past the group's end, a record newer than
    it, a footer): cutting there would drop acknowledged records."""
    start, end, time_ns = mark
    if end is None or time_ns is None or size <= start:
        return False
    if size > end:
        return True
    got = pf.scan(read_at, size, start)
    return any(rec.time_ns > time_ns or rec.kind == pf.FOOTER
               for rec in [*got.records, *got.bad])


def _triples(body: bytes) -> list[tuple[int, Mark]] | None:
    try:
        return [(int(a), (int(b), int(c), int(d))) for a, b, c, d in
                (line.split() for line in body.splitlines())]
    except ValueError:
        return None
