"""Which pack sequence numbers compaction dropped (`packs/dropped`), so a restart can tell a
pack compaction removed from one that was lost (deleted by hand, a directory entry gone with
a disk fault): the second is reported as damage, never taken for a compacted pack.

Why: pack numbers only grow (`PackStore._new_pack` takes the next one; a failed create is
retried under the same number), so every number below the newest pack's either names a
pack on disk or one compaction dropped. A number that is neither held records nobody
copied forward: the shards it held are missing (repair rebuilds them: the node no longer
has them) and its tombstones are gone (`nodes.packshadow` counts it as damage that could
have held any id). The record is written (a new file renamed over the old, fsynced with its
directory) before a pack is unlinked. A store without one (from before this record, or
new) counts every gap it has as dropped and starts one. A record that fails its check
reports nothing missing (it cannot tell) and is written again from the packs there are.
Marks from the newest pack up are cut at open: those numbers are written again (the newest
packs lost, or every pack: a wiped data dir), and a mark kept would hide a later loss. A
cut that cannot be saved (a full disk still starts) leaves those marks on disk, so new packs
are then numbered above them (`floor`; review21h H4) rather than the store refusing to start.

The newest pack lost (a crash that lost the tail files, an operator deleting them) leaves no
gap below the packs there are: so the highest number ever made is kept too (`packs/highest`,
written after each new pack is durable: one small record a pack, `made`), and every number up
to it that is neither there nor dropped is lost; new packs are numbered above it, so a lost
number stays a gap (reported until repaired or acknowledged, `acknowledge`).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from nodes.smallrecord import encode_pairs, overwrite_record, pairs, read_record, write_record

log = logging.getLogger(__name__)

DROPS_NAME = "dropped"  # below `packs/`; never a pack name (`packrecovery.PACK_NAME`)
HIGHEST_NAME = "highest"  # the highest pack number made (the same)
_HEAD = b"tessera-pack-drops 1 "
_HIGHEST_HEAD = b"tessera-pack-highest 1 "
MAX_REPORTED = 10_000  # missing numbers listed at most (a count beyond is still damage)

Ranges = list[tuple[int, int]]  # sorted, disjoint, inclusive [lo, hi]


class Drops:
    """The dropped pack numbers of one store (`open` before use)."""

    def __init__(self, pack_dir: Path) -> None:
        self.path = pack_dir / DROPS_NAME
        self.highest_path = pack_dir / HIGHEST_NAME
        self.ranges: Ranges = []
        self.highest = 0  # the highest pack number made (that its record says)
        self._lock = threading.Lock()
        # no new pack may take a number at or below it: marks the record on disk still
        # holds there (their cut at open was not saved) would hide that pack's loss
        self.floor = 0

    def open(self, existing: list[int]) -> list[int]:
        """Read the record against the packs `existing` (sorted): the numbers below the
        newest that are neither there nor dropped (lost packs, at most MAX_REPORTED)."""
        self.highest = self._read_highest()
        newest = max(existing[-1] if existing else 0, self.highest)
        exists, body = read_record(self.path, _HEAD)
        ranges = None if body is None else _decode(body)
        if ranges is None:
            if exists:
                log.warning("pack drop record %s fails its check: lost packs cannot be told "
                            "from compacted ones until it is rebuilt (now)", self.path)
            self.ranges = _gaps([*existing, newest + 1])
            self._save_now()
            self._made_now(newest)
            return []
        self._made_now(newest)
        clipped = _below(ranges, newest + 1)
        if clipped != ranges:  # numbers from the newest pack up are written again (every
            self.ranges = clipped  # pack gone, or the newest lost): a mark left on one
            if not self._save_now():  # would hide the loss of the new pack under it
                self.floor = ranges[-1][1]  # (review21f F5); unsaved: never reuse them
        self.ranges = clipped
        return _missing([*existing, newest + 1], clipped)

    def made(self, seq: int) -> None:
        """Pack `seq` is made (durable): its number is the highest one (OSError: not
        recorded, so its loss as the newest is not seen; the next new pack records again)."""
        if seq > self.highest:
            # fixed width, rewritten in place: a new pack on a full disk still records it
            overwrite_record(self.highest_path, _HIGHEST_HEAD, f"{seq:020d}\n".encode())
            self.highest = seq

    def _made_now(self, seq: int) -> None:
        """`made` at open (a store from before the record, or one whose record failed its
        check): a full disk still opens, logged."""
        try:
            self.made(seq)
        except OSError as exc:
            log.warning("pack highest record %s not written (%s)", self.highest_path, exc)

    def _read_highest(self) -> int:
        exists, body = read_record(self.highest_path, _HIGHEST_HEAD)
        if body is not None and body.strip().isdigit():
            return int(body)
        if exists:
            log.warning("pack highest record %s fails its check: the newest packs' loss "
                        "is not seen until it is rewritten (now)", self.highest_path)
        return 0

    def acknowledge(self, seqs: list[int]) -> None:
        """Lost packs `seqs` are dealt with (their shards rebuilt by repair, or an operator
        said so): recorded as dropped, durably, so no restart reports them again (OSError:
        not recorded)."""
        with self._lock:
            self.ranges = _merged([*self.ranges, *((seq, seq) for seq in seqs)])
            self._save()

    def add(self, seq: int) -> None:
        """Record pack `seq` as dropped, durably (OSError: not recorded)."""
        with self._lock:  # the committer's drops and an operator's `acknowledge`
            self.ranges = _merged([*self.ranges, (seq, seq)])
            self._save()

    def _save_now(self) -> bool:
        """`_save` at open: a disk too full (or failing) leaves the record to the next drop,
        which writes it whole; the store still opens (False: not saved)."""
        try:
            self._save()
        except OSError as exc:
            log.warning("pack drop record %s not written (%s): written at the next drop",
                        self.path, exc)
            return False
        return True

    def _save(self) -> None:
        write_record(self.path, _HEAD, encode_pairs(self.ranges))


def _decode(body: bytes) -> Ranges | None:
    ranges = pairs(body)
    return ranges if ranges is not None and ranges == _merged(ranges) else None


def _merged(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _below(ranges: Ranges, limit: int) -> Ranges:
    """`ranges` cut to the numbers below `limit`."""
    return [(lo, min(hi, limit - 1)) for lo, hi in ranges if lo < limit]


def _gaps(existing: list[int]) -> Ranges:
    """The numbers from 1 below the newest pack that no pack has."""
    out: Ranges = []
    prev = 0
    for seq in existing:
        if seq > prev + 1:
            out.append((prev + 1, seq - 1))
        prev = seq
    return out


def _missing(existing: list[int], dropped: Ranges) -> list[int]:
    """The gaps' numbers not in `dropped` (at most MAX_REPORTED)."""
    out: list[int] = []
    i = 0
    for lo, hi in _gaps(existing):
        at = lo
        while at <= hi and len(out) < MAX_REPORTED:
            while i < len(dropped) and dropped[i][1] < at:
                i += 1
            if i < len(dropped) and dropped[i][0] <= at:
                at = dropped[i][1] + 1
                continue
            stop = hi if i >= len(dropped) else min(hi, dropped[i][0] - 1)
            out.extend(range(at, min(stop, at + MAX_REPORTED - len(out) - 1) + 1))
            at = stop + 1
    return out
