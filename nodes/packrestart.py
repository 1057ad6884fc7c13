"""What a restart finds in one disk's packs: each pack indexed (`nodes.packrecovery`: from its
footer or a scan), an unsure mark's failed group set aside (`nodes.packunsure`), records whose
bodies were punched read as tombstones (`nodes.packpunch`), and the damage found kept in
`damage` until compaction drops the pack or an operator acknowledges a lost one.
A mixin of `nodes.packstore.PackStore` (whose `open` drives it), kept apart so that module
stays one concept (split22).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from nodes import packformat as pf
from nodes.packdrops import Drops
from nodes.packpunch import body_punched, hole_ranges
from nodes.packrecovery import Damage, recover, set_aside
from nodes.packunsure import Mark, stale

log = logging.getLogger("nodes.packstore")  # the store's log, as before the split


class PackRestart:
    """Indexing packs at `PackStore.open` and the damage bookkeeping (the store supplies the
    attributes below)."""

    quarantine_dir: Path
    sizes: dict[int, int]
    live: dict[int, int]
    holes: dict[int, int]
    damage: list[Damage]
    _damage_lock: threading.Lock
    drops: Drops
    missing: list[int]
    footers_read: int
    _retired: set[int]
    _fds: OrderedDict[int, int]
    _fd_lock: threading.Lock

    if TYPE_CHECKING:  # the store's own steps these use
        def _fd(self, seq: int) -> int: ...
        def _apply(self, seq: int, rec: pf.Record) -> None: ...

    def _recover(self, seq: int, unsure: Mark | None = None) -> list[pf.Record] | None:
        """Index pack `seq`: from its footer when it has one that checks (sealed: None is
        returned), else by a scan (its records returned: the last pack's go on). A failed
        group left from `unsure` on (`nodes.packunsure`) is set aside first, never indexed,
        and the pack retired: appends go to a new one (a stale mark is dropped, logged)."""
        fd = self._fd(seq)
        try:
            size = os.fstat(fd).st_size
            if unsure is not None and stale(lambda off, n: os.pread(fd, n, off), size, unsure):
                log.warning("pack %d: unsure mark at %d is stale (records of other writes "
                            "after it: a downgraded node wrote on); not applied", seq, unsure[0])
            elif unsure is not None:
                if size > unsure[0]:
                    set_aside(self.quarantine_dir, seq, fd, unsure[0], size, "unsure")
                self._retired.add(seq)
            return self._recover_fd(seq, fd)
        finally:  # a sealed pack's fd is not kept for the store's life (see `_fd`)
            with self._fd_lock:
                if seq in self._fds:
                    os.close(self._fds.pop(seq))

    def _recover_fd(self, seq: int, fd: int) -> list[pf.Record] | None:
        got = recover(seq, fd, self.quarantine_dir)
        holes, block = hole_ranges(fd, got.size), os.fstat(fd).st_blksize or 4096
        for rec in got.records:
            if rec.kind == pf.PUT and body_punched(holes, rec, block):  # punched: gone, as
                rec = dataclasses.replace(rec, kind=pf.TOMBSTONE)  # the record that killed
                # it may be (lost): the shard missing, never its zeros (`nodes.packpunch`)
            self._apply(seq, rec)
        self.sizes[seq] = got.size
        self.live.setdefault(seq, 0)
        holes = got.size - os.fstat(fd).st_blocks * 512  # punched before this restart: the
        if holes > 0:  # disk gave them back (review21f F7), so `disk_bytes` must not count
            self.holes[seq] = holes  # them until the compactor punches this pack again
        if got.damage is not None:
            self.damage.append(got.damage)
        if got.sealed:
            self.footers_read += 1
            return None
        return got.records

    def acknowledge_lost(self, seqs: list[int]) -> list[int]:
        """Stop reporting lost packs `seqs` (those of them still reported; `Drops.acknowledge`,
        durably first: OSError leaves them reported); the ones acknowledged."""
        with self._damage_lock:  # (a worker thread's; compaction's `_drop` rewrites it too)
            done = sorted(set(seqs) & set(self.missing))
            if done:
                self.drops.acknowledge(done)
                self.missing = [seq for seq in self.missing if seq not in done]
                self.damage = [d for d in self.damage if not (d.missing and d.seq in done)]
        return done

    def _forget_damage(self, seq: int) -> None:
        """Pack `seq`'s damage is gone with it (compaction dropped or emptied it)."""
        with self._damage_lock:
            self.damage = [d for d in self.damage if d.seq != seq]
