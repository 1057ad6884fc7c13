"""Whether a range of a file is all in the page cache, asked without touching it.

A shard window whose reader checks every frame itself (`X-Tessera-Reader-Checks`) is sent
by `sendfile` on the event loop with no check here; that is only safe when no page of it
has to come from the disk (the loop would wait for it). `cachestat(2)` (Linux 6.5+) counts
a range's cached pages in one call, reading none of them: cheaper than the `RWF_NOWAIT`
read into a copy the checked path needs anyway, and it works for any window size.
"""

from __future__ import annotations

import ctypes
import os

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_SYS_CACHESTAT = 451  # the same number on every architecture (the unified syscall table)


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


try:
    _syscall = ctypes.CDLL(None, use_errno=True).syscall
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _syscall = None
_available = _syscall is not None


def resident(fd: int, offset: int, nbytes: int) -> bool | None:
    """True when every page of `fd`'s bytes [offset, offset+nbytes) is cached, False when
    one is not, None when the kernel cannot say (no cachestat: treat as not resident)."""
    global _available
    if nbytes <= 0:
        return True
    if not _available:
        return None
    rng, stat = _Range(offset, nbytes), _Stat()
    if _syscall(_SYS_CACHESTAT, fd, ctypes.byref(rng), ctypes.byref(stat), 0) != 0:
        if ctypes.get_errno() in (38, 1):  # ENOSYS, EPERM (a filter): never ask again
            _available = False
        return None
    pages = (offset + nbytes - 1) // PAGE - offset // PAGE + 1
    return stat.nr_cache >= pages
