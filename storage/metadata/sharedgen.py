"""A change counter shared through a small mapped file by every process of one host.

The SQLite store keeps bucket records in memory between requests (`SqliteStore.get`): each
process (gateway workers, the CLI, the volume driver) has its own copy, so a bucket written
through one must be re-read by all the others at once. Every store that writes a bucket
record bumps this counter (after its commit, before its caller learns the write is done),
and a cached record is used only while the counter still holds the value it was read at.
Writers take an exclusive `flock` (bucket writes are rare); readers read the 8-byte word
without a lock.
"""

from __future__ import annotations

import fcntl
import os
import struct

from storage.sharedmap import map_fd

_WORD = struct.Struct("<Q")


class SharedGeneration:
    """One counter file (see the module docstring); one instance per store."""

    def __init__(self, path: str | os.PathLike[str],
                 like: str | os.PathLike[str] | None = None) -> None:
        """Open (or create) the counter at `path`. A new one takes the mode and owner of
        `like` (the database file): whoever may write the database may bump its counter,
        whichever process happened to create it (a root-run CLI before a service user's
        gateway, say)."""
        ref = os.stat(like) if like is not None else None
        mode = (ref.st_mode & 0o666) if ref is not None else 0o600
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
            if ref is not None:
                os.fchmod(self._fd, mode)  # not narrowed by this process's umask
                if os.geteuid() == 0 and (ref.st_uid, ref.st_gid) != (0, 0):
                    os.fchown(self._fd, ref.st_uid, ref.st_gid)
        except FileExistsError:
            self._fd = os.open(path, os.O_RDWR)
        try:
            self._map = map_fd(self._fd, _WORD.size, path)  # blocks allocated: no SIGBUS
        except BaseException:
            os.close(self._fd)
            raise

    def value(self) -> int:
        """The current count (a stable value: two equal reads in a row)."""
        while True:
            v = _WORD.unpack_from(self._map, 0)[0]
            if _WORD.unpack_from(self._map, 0)[0] == v:
                return int(v)

    def bump(self) -> None:
        """Advance the count: every copy read before now is stale."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            _WORD.pack_into(self._map, 0, (self.value() + 1) & 0xFFFF_FFFF_FFFF_FFFF)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
