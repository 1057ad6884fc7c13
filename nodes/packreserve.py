"""Space a pack store keeps back for freeing space (issue 17): a file of allocated blocks,
`packs/reserve`, given up when a DELETE's tombstone or a compaction step finds the disk full.

Why: with shards in packs, freeing space takes space. A DELETE appends a tombstone and only
compaction gives the blocks back, after copying a pack's live records forward. On a full disk
both fail (ENOSPC), so a node that filled up could never free anything, however much was
deleted (a shard file's unlink needs no space). The reserve is taken back as soon as there is
room again, and while it is down client PUTs are refused once free space falls below its
size: space freed for deletes and compaction is not eaten by new shards first.

The reserve is not made durable (a crash may lose it; `arm` runs at every open).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

RESERVE_NAME = "reserve"  # below `packs/`; never a pack name (`packrecovery.PACK_NAME`)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Reserve:
    """`size` bytes allocated to `path` while armed."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        self.armed = size <= 0  # nothing to keep back: always "armed"
        self.released = 0  # times the reserve was given up (operators, tests)

    def arm(self) -> bool:
        """Allocate the reserve if it is not: True when it holds its size now. A disk too
        full for it leaves none (the blocks a failed allocation took are given back)."""
        if self.armed:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, self.size)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # no allocation without
                self.size, self.armed = 0, True  # writing here: no reserve at all
                return True
            if not is_disk_full(exc):
                raise
            return False
        finally:
            os.close(fd)
        self.armed = True
        return True

    def release(self) -> bool:
        """Give the reserve's blocks back to the file system: True when it held them."""
        if not self.armed or self.size <= 0:
            return False
        with contextlib.suppress(FileNotFoundError):
            os.truncate(self.path, 0)
        self.armed = False
        self.released += 1
        return True
