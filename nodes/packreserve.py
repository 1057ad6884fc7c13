"""Space a pack store keeps back for freeing space (issue 17): a file of allocated blocks,
`packs/reserve`, given up when a DELETE's tombstone or a compaction step finds the disk full.

Why: with shards in packs, freeing space takes space. A DELETE appends a tombstone and only
compaction gives the blocks back, after copying a pack's live records forward. On a full disk
both fail (ENOSPC), so a node that filled up could never free anything, however much was
deleted (a shard file's unlink needs no space). The reserve is taken back as soon as there is
room again, and while any of it is given up client PUTs of packed shards are refused: space
freed for deletes and compaction is not eaten by new shards first.

It is given up a piece at a time (what the write that met the full disk needs, and `SLACK`
for the file system's own blocks), not whole: tombstones written on a full disk must not
hand the room a compaction needs to whoever writes next. Sized one pack by default (`[packs]
reserve_bytes`), it holds a compaction candidate's live records (below compact_ratio of a
pack); a candidate that does not fit (a pack of tombstones over a smaller reserve) is
skipped (`PackCompaction._compaction`). Nodes sharing one file system share its free
space: there the reserve guards nothing (test clusters keep a small one).

The reserve is not made durable (a crash may lose it; `arm` runs at every open).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

SLACK = 64 * 1024  # given up beyond a write's bytes (the file system's blocks for them)
RESERVE_NAME = "reserve"  # below `packs/`; never a pack name (`packrecovery.PACK_NAME`)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Reserve:
    """Up to `size` bytes allocated to `path`: `held` now (`armed` when all of it)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, max(size, 0)
        self.held = 0  # bytes allocated now (`arm` takes them at open)
        self.released = 0  # times part of the reserve was given up (operators, tests)
        self.unsupported = False  # the file system cannot allocate it: no reserve at all

    @property
    def armed(self) -> bool:
        return self.held >= self.size

    def open(self) -> bool:
        """`arm` at a store's open, after cutting a reserve file left larger than `size` (a
        life with a larger `[packs] reserve_bytes`, or one of 0 now) down to it. What the
        file holds counts as held: a restart on a still-full disk keeps it (only `arm`
        grows the file, and a failed `arm` cuts it back to what it held)."""
        with contextlib.suppress(FileNotFoundError):
            have = os.stat(self.path).st_size
            if have > self.size:
                os.truncate(self.path, self.size)
            self.held = min(have, self.size)
        return self.arm()

    def arm(self) -> bool:
        """Allocate the whole reserve if it is not: True when it holds its size now. A
        disk too full for it keeps what it held (the blocks a failed allocation took beyond
        that are given back)."""
        if self.armed:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, self.size)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self.held)
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # no allocation without
                log.warning("pack reserve disabled: the file system at %s cannot allocate "
                            "it (%s); a full disk may be unable to free space",
                            self.path.parent, errno.errorcode.get(exc.errno, exc.errno))
                self.size = self.held = 0  # writing here: no reserve at all
                self.unsupported = True
                return True
            if not is_disk_full(exc):
                raise
            return False
        finally:
            os.close(fd)
        self.held = self.size
        return True

    def release(self, need: int = 0) -> bool:
        """Give `need` bytes of the reserve and SLACK (at most what it holds) back to the
        file system: True when it gave any."""
        if self.held <= 0:
            return False
        self.held = max(0, self.held - max(need, 0) - SLACK)
        try:
            os.truncate(self.path, self.held)
        except FileNotFoundError:
            self.held = 0
        self.released += 1
        return True
