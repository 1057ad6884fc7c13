"""A small file mapped shared by the processes of one host (gateway workers, the CLI):
created on first use, grown to the size asked for, never shrunk.

Every byte mapped has its disk blocks allocated first (`posix_fallocate`): a store into a
page of a sparse file on a full file system raises SIGBUS and kills the process with no
traceback, where an allocation that fails is an `OSError` at open time (`NoSpaceForMap`).
"""

from __future__ import annotations

import errno
import mmap
import os


class NoSpaceForMap(OSError):
    """The file system holding a shared map has no room for its blocks."""


def map_fd(fd: int, size: int, path: str | os.PathLike[str]) -> mmap.mmap:
    """A shared map of the first `size` bytes of the open file `fd` (named `path` in the
    error), its blocks allocated (zero-filled where the file was shorter or sparse).
    Raises NoSpaceForMap when the file system is full."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpaceForMap(exc.errno, f"no space on the file system of {path} for its "
                                f"{size} bytes: free space there, then start again") from None
        raise
    return mmap.mmap(fd, size)


def map_shared(path: str | os.PathLike[str], size: int) -> tuple[int, mmap.mmap]:
    """The open descriptor (for `flock`, or to close at once) and a shared map of the
    first `size` bytes of `path` (created with mode 0600, zero-filled to `size`)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        return fd, map_fd(fd, size, path)
    except BaseException:
        os.close(fd)
        raise
