"""glibc malloc settings for processes that move megabyte buffers (gateway, nodes).

By default glibc serves blocks above a dynamic threshold (128 KiB at first) with a fresh
`mmap` and gives the top of a heap back to the kernel once more than twice the largest
freed block sits free there. A data path that allocates and frees a few 1 MiB segments,
frames and 256 KiB receive buffers per megabyte moved keeps crossing both lines, so
almost every byte lands on pages the kernel must fault in and zero again (measured: about
one minor fault per 4 KiB moved, gateway and nodes alike). Fixed thresholds keep those
blocks in the heap and reuse its pages: the price is up to `TRIM_BYTES` of free memory a
heap keeps instead of returning it, per malloc arena.

Every thread that allocates gets its own arena (up to 8 per core), and a block freed on
another thread goes back to the arena it came from: in the gateway, frames made on the
coding threads and segments received on the event loop each filled their own arena up to
its trim line, so a worker sat at ~180 MiB after a few concurrent 64 MiB PUTs though ~90
were live. The gateway therefore keeps one arena (`GATEWAY_ARENAS`: a block freed anywhere
is reused by the next allocation on any thread) and a lower trim line (`GATEWAY_TRIM_BYTES`),
so its RSS follows what its uploads hold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # <malloc.h> parameter numbers
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_BYTES = 16 * 1024 * 1024  # blocks below this come from the heap (4 MiB segments fit)
TRIM_BYTES = 64 * 1024 * 1024  # free bytes a heap top keeps before giving pages back
GATEWAY_ARENAS = 1  # the gateway's threads share one arena (freed frames reused by all)
GATEWAY_TRIM_BYTES = 8 * 1024 * 1024  # ... whose top keeps at most this much free


def tune_malloc(mmap_bytes: int = MMAP_BYTES, trim_bytes: int = TRIM_BYTES,
                arenas: int | None = None) -> bool:
    """Set fixed mmap and trim thresholds, and with `arenas` the most malloc arenas (glibc
    only; glibc's own MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / MALLOC_ARENA_MAX in
    the environment, or the same settings in GLIBC_TUNABLES, win). Call it before any
    thread starts. True when both thresholds were set here."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): nothing to tune
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if arenas is not None and "MALLOC_ARENA_MAX" not in os.environ and \
            "glibc.malloc.arena_max" not in tunables:
        mallopt(M_ARENA_MAX, arenas)
    ok = "MALLOC_MMAP_THRESHOLD_" not in os.environ and \
        "glibc.malloc.mmap_threshold" not in tunables and \
        mallopt(M_MMAP_THRESHOLD, mmap_bytes) == 1
    return "MALLOC_TRIM_THRESHOLD_" not in os.environ and \
        "glibc.malloc.trim_threshold" not in tunables and \
        mallopt(M_TRIM_THRESHOLD, trim_bytes) == 1 and ok
