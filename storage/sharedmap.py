"""A small file mapped shared by the processes of one host (gateway workers, the CLI):
created on first use, grown to the size asked for, never shrunk."""

from __future__ import annotations

import mmap
import os


def map_shared(path: str | os.PathLike[str], size: int) -> tuple[int, mmap.mmap]:
    """The open descriptor (for `flock`, or to close at once) and a shared map of the
    first `size` bytes of `path` (created with mode 0600, zero-filled to `size`)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
        return fd, mmap.mmap(fd, size)
    except BaseException:
        os.close(fd)
        raise
