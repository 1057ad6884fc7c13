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

The marks are kept in session 21's format (`seq start`, the only one that release reads:
a one-step downgrade applies them as it always did, review22e L5). What a mark adds is in a
side record, `packs/unsure-group` (`seq start end` and each record of the failed group by
offset and head checksum), which older code ignores: code from before `packs/unsure` leaves
the mark in place, so after a downgrade and an upgrade the marked pack may hold records
written since (the downgraded node indexed the group and wrote on after it, acknowledged).
A mark is applied only while the pack ends within the group and every record from its start
is one of the group's (same offset, same head: no clock is trusted, review22e L5; a footer
or a record written since is not); else it is dropped, logged, and the pack kept as the
downgraded node left it (a durable record it let be punched is then gone, not corrupt:
`nodes.packpunch.body_punched`). A mark without a side entry (one from session 21, or whose
side entry could not be written) is applied as before; one from packs22's single record
(`seq start end time_ns`) is read with its end only.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import crc32c

from nodes import packformat as pf
from nodes.smallrecord import encode_pairs, pairs, read_record, write_record

log = logging.getLogger(__name__)

UNSURE_NAME = "unsure"  # below `packs/`; never a pack name (`packrecovery.PACK_NAME`)
GROUP_NAME = "unsure-group"  # the side record (never a pack name either)
_HEAD = b"tessera-pack-unsure 1 "  # lines "seq start": session 21's format, kept
_HEAD_2 = b"tessera-pack-unsure 2 "  # lines "seq start end time_ns" (packs22's, read only)
_GROUP_HEAD = b"tessera-pack-unsure-group 1 "  # lines "seq start end off:crc,off:crc,..."

# (start, the group's end, its records' head checksums by offset; None: not known)
Mark = tuple[int, int | None, dict[int, int] | None]


def head_crc(rec: pf.Record) -> int:
    """The checksum of a record's head (kind, shard, write time, length): who wrote it
    (-1 for a head no record may hold)."""
    try:
        return crc32c.crc32c(pf.encode_head(rec.kind, rec.stripe, rec.index, rec.time_ns,
                                            rec.body_len))
    except ValueError:
        return -1


class Unsure:
    """The failed-group marks of one store: pack seq -> Mark (`load` before use)."""

    def __init__(self, pack_dir: Path) -> None:
        self.path = pack_dir / UNSURE_NAME
        self.group_path = pack_dir / GROUP_NAME
        self.starts: dict[int, Mark] = {}
        self._bad = False  # the record on disk fails its check (rewritten empty at clear)

    def load(self) -> dict[int, Mark]:
        """The marks the record names (a copy; nothing when absent or failing its check),
        with what the side record says of each (same pack and start)."""
        exists, body = read_record(self.path, _HEAD)
        got: dict[int, Mark] | None = None
        if body is not None and (two := pairs(body)) is not None:
            groups = self._groups()
            got = {seq: (start, *groups[seq][1:]) if groups.get(seq, (None,))[0] == start
                   else (start, None, None) for seq, start in two}
        elif exists:
            _, new = read_record(self.path, _HEAD_2)
            fours = None if new is None else _fours(new)
            got = None if fours is None else {seq: (start, end, None)
                                              for seq, start, end in fours}
        self._bad = exists and got is None
        if self._bad:
            log.warning("pack unsure record %s fails its check: ignored", self.path)
        self.starts = dict(got or {})
        return dict(self.starts)

    def _groups(self) -> dict[int, Mark]:
        """The side record's entries (nothing when absent or failing its check)."""
        _, body = read_record(self.group_path, _GROUP_HEAD)
        try:
            out: dict[int, Mark] = {}
            for line in (body or b"").splitlines():
                seq, start, end, heads = line.split()
                out[int(seq)] = (int(start), int(end), {
                    int(off): int(crc, 16) for off, crc in
                    (h.split(b":") for h in heads.split(b",") if h)})
            return out
        except ValueError:
            log.warning("pack unsure side record %s does not parse: ignored", self.group_path)
            return {}

    def add(self, seq: int, start: int, end: int, recs: list[pf.Record]) -> None:
        """Record that pack `seq` holds a failed group `recs` in [start, end), durably
        (OSError: not recorded). The side record first: a mark without it still cuts."""
        self.starts[seq] = (start, end, {rec.offset: head_crc(rec) for rec in recs})
        try:
            self._save_groups()
        except OSError as exc:  # the mark is what matters; without its side entry it is
            log.warning("pack unsure side record %s not written (%s)", self.group_path, exc)
        self._save()

    def clear(self) -> None:
        """Forget every mark, durably (OSError: the record stays; the side record's entries
        mean nothing without a mark of the same pack and start)."""
        if self.starts or self._bad:  # else nothing to write (most opens)
            self.starts = {}  # (the marks' ranges are set aside already: losing them is
            self._save()  # harmless; keeping them on disk is what `PackStore` guards)
            self._bad = False
        if self.group_path.exists():
            with contextlib.suppress(OSError):
                self.group_path.unlink()

    def _save(self) -> None:
        write_record(self.path, _HEAD, encode_pairs(
            sorted((seq, m[0]) for seq, m in self.starts.items())))

    def _save_groups(self) -> None:
        write_record(self.group_path, _GROUP_HEAD, "".join(
            f"{seq} {start} {end} " + ",".join(f"{o}:{c:08x}" for o, c in sorted(heads.items()))
            + "\n" for seq, (start, end, heads) in sorted(self.starts.items())
            if end is not None and heads is not None).encode())


def stale(read_at: pf.ReadAt, size: int, mark: Mark) -> bool:
    """Whether pack bytes [start, size) hold what the marked group cannot be (written
    since, by code that ignored the mark: bytes past the group's end, a record that is not
    one of the group's, a footer): cutting there would drop acknowledged records."""
    start, end, heads = mark
    if end is None or size <= start:
        return False
    if size > end:
        return True
    if heads is None:
        return False
    got = pf.scan(read_at, size, start)
    return any(rec.kind == pf.FOOTER or heads.get(rec.offset) != head_crc(rec)
               for rec in [*got.records, *got.bad])


def _fours(body: bytes) -> list[tuple[int, int, int]] | None:
    try:
        return [(int(a), int(b), int(c)) for a, b, c, _ in
                (line.split() for line in body.splitlines())]
    except ValueError:
        return None
