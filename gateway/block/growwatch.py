"""A mount daemon grows its own device when its volume's record grew (block22).

`tessera volume resize` (CLI or admin API) grows the mounts of the host it runs on
(`mount.grow_mounted`); a mount on any other host kept its old size until remounted (writes
past the old end ENOSPC, a loop device under a file system its old capacity). The daemon
reads the record on each lease renewal (`VolumeHandle.on_grown`, every ttl/3) and, once it
grew, grows this host's mounts of the volume the same way: its FUSE file truncated up to the
record's size (what the daemon's `truncate` takes), a loop device over it `--set-capacity`.
Only its own mount: another daemon of the volume here is a stale writer (stopped, fenced),
not one to wait for. On a thread of its own: the grow waits on this daemon's FUSE answers.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from gateway.block.mount import grow_mounted

log = logging.getLogger("tessera.block")


class GrowOnRecord:
    """`on_grown` for a mount daemon's handle: one grow at a time, tried again at the next
    renewal until its mount (FUSE file and loop device) took the record's size."""

    def __init__(self, data_dir: Path, tenant: str, name: str, size: int) -> None:
        self.data_dir, self.tenant, self.name = data_dir, tenant, name
        self.grown_to = size  # its mount is this large
        self._busy = threading.Lock()

    def __call__(self, size: int) -> None:
        if size > self.grown_to and self._busy.acquire(blocking=False):
            threading.Thread(target=self._grow, args=(size,), name="grow-on-record",
                             daemon=True).start()

    def _grow(self, size: int) -> None:
        try:
            log.info("volume %s: its record grew to %d bytes (a resize elsewhere): growing "
                     "the mount", self.name, size)
            mounts = grow_mounted(self.data_dir, self.tenant, self.name, size, os.getpid())
            if all(not why for _, why in mounts):
                self.grown_to = size
            for st, why in mounts:
                if why:
                    log.warning("volume %s: the mount at %s %s", self.name, st.target, why)
                elif st.loop:
                    log.info("volume %s: loop device %s grown; its %s file system keeps its "
                             "size until grown (resize2fs %s)", self.name, st.loop, st.fs,
                             st.loop)
        except Exception:  # a thread's failure would vanish; the next renewal tries again
            log.exception("volume %s: growing the mount failed", self.name)
        finally:
            self._busy.release()
