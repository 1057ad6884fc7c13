"""A mount daemon grows its own device when its volume's record grew (block22).

`tessera volume resize` (CLI or admin API) grows the mounts of the host it runs on
(`mount.grow_mounted`); a mount on any other host kept its old size until remounted (writes
past the old end ENOSPC, a loop device under a file system its old capacity). The daemon
reads the record on each lease renewal (`VolumeHandle.on_grown`, every ttl/3) and, once it
grew, grows this host's mounts of the volume the same way: its FUSE file truncated up to the
record's size (what the daemon's `truncate` takes), a loop device over it `--set-capacity`.
Only its own mount: another daemon of the volume here is a stale writer (stopped, fenced),
not one to wait for. On a thread of its own: the grow waits on this daemon's FUSE answers.
A grow that failed is tried again after RETRY_FIRST_S, doubling up to RETRY_MAX_S (one that
always fails, `losetup` refused in a container, spawned children and a warning at every
renewal for the mount's whole life; review22g F7).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gateway.block.mount import grow_mounted

log = logging.getLogger("tessera.block")

RETRY_FIRST_S = 10.0  # after a failed grow; doubled after each further one
RETRY_MAX_S = 300.0


class GrowOnRecord:
    """`on_grown` for a mount daemon's handle: one grow at a time, tried again after a
    backoff (RETRY_FIRST_S doubling to RETRY_MAX_S) until its mount (FUSE file and loop
    device) took the record's size. `failures`: grows failed in a row (0 once one
    succeeded)."""

    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, data_dir: Path, tenant: str, name: str, size: int) -> None:
        self.data_dir, self.tenant, self.name = data_dir, tenant, name
        self.grown_to = size  # its mount is this large
        self.failures = 0
        self._not_before = 0.0  # clock() before which no grow is tried
        self._busy = threading.Lock()

    def __call__(self, size: int) -> None:
        if size > self.grown_to and self.clock() >= self._not_before and \
                self._busy.acquire(blocking=False):
            threading.Thread(target=self._grow, args=(size,), name="grow-on-record",
                             daemon=True).start()

    def _grow(self, size: int) -> None:
        ok = False
        try:
            log.info("volume %s: its record grew to %d bytes (a resize elsewhere): growing "
                     "the mount", self.name, size)
            mounts = grow_mounted(self.data_dir, self.tenant, self.name, size, os.getpid())
            ok = all(not why for _, why in mounts)
            for st, why in mounts:
                if why:
                    log.warning("volume %s: the mount at %s %s", self.name, st.target, why)
                elif st.loop:
                    log.info("volume %s: loop device %s grown; its %s file system keeps its "
                             "size until grown (resize2fs %s)", self.name, st.loop, st.fs,
                             st.loop)
        except Exception:  # a thread's failure would vanish; it is tried again later
            log.exception("volume %s: growing the mount failed", self.name)
        finally:
            self._done(size, ok)
            self._busy.release()

    def _done(self, size: int, ok: bool) -> None:
        if ok:
            self.grown_to, self.failures, self._not_before = size, 0, 0.0
            return
        self.failures += 1
        delay = min(RETRY_FIRST_S * 2 ** (self.failures - 1), RETRY_MAX_S)
        self._not_before = self.clock() + delay
        log.warning("volume %s: growing the mount to %d bytes failed %d time(s) in a row; "
                    "next try in %g s", self.name, size, self.failures, delay)
