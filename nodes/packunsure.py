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
"""

from __future__ import annotations

import logging
from pathlib import Path

from nodes.smallrecord import encode_pairs, pairs, read_record, write_record

log = logging.getLogger(__name__)

UNSURE_NAME = "unsure"  # below `packs/`; never a pack name (`packrecovery.PACK_NAME`)
_HEAD = b"tessera-pack-unsure 1 "


class Unsure:
    """The failed-group starts of one store: pack seq -> offset (`load` before use)."""

    def __init__(self, pack_dir: Path) -> None:
        self.path = pack_dir / UNSURE_NAME
        self.starts: dict[int, int] = {}
        self._bad = False  # the record on disk fails its check (rewritten empty at clear)

    def load(self) -> dict[int, int]:
        """The starts the record names (a copy; nothing when absent or failing its check)."""
        exists, body = read_record(self.path, _HEAD)
        got = None if body is None else pairs(body)
        self._bad = exists and got is None
        if self._bad:
            log.warning("pack unsure record %s fails its check: ignored", self.path)
        self.starts = dict(got or [])
        return dict(self.starts)

    def add(self, seq: int, start: int) -> None:
        """Record that pack `seq` holds a failed group from `start`, durably (OSError:
        not recorded)."""
        self.starts[seq] = start
        self._save()

    def clear(self) -> None:
        """Forget every start, durably (OSError: the record stays)."""
        if self.starts or self._bad:  # else nothing to write (most opens)
            self.starts = {}  # (the marks' ranges are set aside already: losing them is
            self._save()  # harmless; keeping them on disk is what `PackStore` guards)
            self._bad = False

    def _save(self) -> None:
        write_record(self.path, _HEAD, encode_pairs(sorted(self.starts.items())))
