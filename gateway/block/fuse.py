"""The FUSE block driver: one file, `volume`, whose bytes are an attached Tessera volume.

Run as its own process (`python -m gateway.block.fuse`), usually started by
`tessera volume mount`. It opens the cluster with the storage library directly, takes the
volume's attach lease, and serves requests on libfuse3's worker threads (mfusepy), several
at once: each request runs as a coroutine on one asyncio loop thread that owns the volume.
Writes go to the volume's journal (`storage/volume_overlay.py`; `--no-journal`: a bounded
write-back cache of whole extents); `fsync`, `flush`, `release` and unmount are
durability barriers; setting the xattr `user.tessera.checkpoint` folds the journal into
extents (what a snapshot freezes). `fallocate` punch-hole / zero-range (what the loop device turns a
discard, e.g. `fstrim`, into) zeroes the range, and whole extents become holes again.
The process marks itself PR_SET_IO_FLUSHER so memory reclaim never waits on its own I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import errno
import logging
import os
import signal
import socket
import stat
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import mfusepy

from gateway.block.cache import ExtentCache
from gateway.block.growwatch import GrowOnRecord
from gateway.block.mount import (
    CHECKPOINT_XATTR,
    DEFAULT_MAX_DIRTY_MIB,
    DETACHED_MARK,
    NO_JOURNAL_MAX_DIRTY_MIB,
    SNAPSHOT_XATTR,
    release_file_systems,
)
from storage.cluster import Cluster
from storage.config import load_config
from storage.errors import Conflict, InvalidInput, StorageError
from storage.malloc import tune_malloc
from storage.starterdeath import ENV as STARTER_ENV
from storage.starterdeath import watch_starters
from storage.volume_overlay import JournaledVolume
from storage.volumes import LEASE_TTL_S, VolumeHandle

PR_SET_IO_FLUSHER = 57
FUSE_CAP_WRITEBACK_CACHE = 1 << 16
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
FILE_PATH = "/volume"
MAX_BACKGROUND = 64
log = logging.getLogger("tessera.block")
T = TypeVar("T")
Cache = ExtentCache | JournaledVolume


def set_io_flusher() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) == 0


class LoopThread:
    """One asyncio loop on its own thread; FUSE worker threads submit coroutines to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="volume-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Termination signals belong to libfuse's handler on the main thread.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class PinnedFUSE(mfusepy.FUSE):
    """mfusepy's FUSE, keeping each libfuse worker thread's Python thread state.

    libfuse's threads are not Python's: for each callback ctypes makes a thread state and
    frees it on return, with its frame stack (an mmap, page faults, a munmap per request: a
    quarter of the daemon's CPU on random 4 KiB writes). One extra PyGILState_Ensure per
    thread, never released, keeps the state for the thread's life; libfuse keeps at most
    `max_threads` (10) workers, so at most that many states are held.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pinned: set[int] = set()
        self._ensure = ctypes.pythonapi.PyGILState_Ensure
        self._ensure.restype = ctypes.c_int
        super().__init__(*args, **kwargs)

    def _wrapper(self, func, *args, **kwargs):  # type: ignore[no-untyped-def]
        tid = threading.get_native_id()
        if tid not in self._pinned:
            self._pinned.add(tid)
            self._ensure()
        return super()._wrapper(func, *args, **kwargs)


class VolumeFS(mfusepy.Operations):
    """A directory holding one regular file backed by the write-back cache."""

    use_ns = True

    def __init__(self, runner: LoopThread, cache: Cache, banner: str) -> None:
        self.runner = runner
        self.cache = cache
        self.size = cache.vol.vol.size
        self.banner = banner

    def _io(self, what: str, coro: Coroutine[Any, Any, T]) -> T:
        """Run one request on the volume loop; a storage failure is EIO (never zeros)."""
        try:
            return self.runner.call(coro)
        except StorageError as exc:
            log.error("%s failed: %s", what, exc)
            raise mfusepy.FuseOSError(errno.EIO) from None

    def init_with_config(self, conn_info, config_3) -> None:  # type: ignore[no-untyped-def]
        if conn_info is not None:  # the kernel batches small writes; fsync still reaches us
            conn_info.want |= conn_info.capable & FUSE_CAP_WRITEBACK_CACHE
            if not conn_info.want & FUSE_CAP_WRITEBACK_CACHE:
                log.info("no kernel FUSE write-back cache here: every write reaches the daemon")
            # Write-back pages are background requests: let more than libfuse's 12 be in
            # flight, so random 4 KiB pages are not served one round trip at a time.
            conn_info.max_background = MAX_BACKGROUND
            conn_info.congestion_threshold = MAX_BACKGROUND * 3 // 4
        if config_3 is not None:
            config_3.kernel_cache = 1  # keep the page cache across opens
            config_3.attr_timeout = config_3.entry_timeout = 300.0
        print(self.banner, flush=True)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_blksize": 4096}
        if path == FILE_PATH:
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": self.size,
                    "st_blocks": self.size // 512, "st_blksize": 4096}
        raise mfusepy.FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        if path != "/":
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        return [".", "..", FILE_PATH[1:]]

    def open(self, path: str, flags: int) -> int:
        if path != FILE_PATH:
            raise mfusepy.FuseOSError(errno.EISDIR if path == "/" else errno.ENOENT)
        return 0

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        """The file is as long as the volume: growing it to the size the volume record has
        now (`tessera volume resize` of a mounted volume: `mount.grow_mounted`) is how the
        mount learns it; any other size is EPERM (resize with `tessera volume resize`)."""
        if length != self.size:
            if length < self.size or self._io(
                    "resize", self.cache.vol.refresh()).size != length:
                raise mfusepy.FuseOSError(errno.EPERM)
            log.info("volume grown to %d bytes", length)
            self.size = length
        return 0

    def chmod(self, path: str | None, mode: int) -> int:
        return 0  # the file's mode is fixed; accepted and ignored

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        return 0

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        if isinstance(self.cache, JournaledVolume):  # overlay or cached: no hop to the loop
            data = self.cache.try_read(offset, size)
            if data is not None:
                return data
        return self._io(f"read {offset}+{size}", self.cache.read(offset, size))

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        if offset >= self.size:
            raise mfusepy.FuseOSError(errno.ENOSPC)
        if isinstance(self.cache, JournaledVolume):  # whole pages: no hop to the loop
            n = self.cache.try_write(offset, data)
            if n is not None:
                return n
        return self._io(f"write {offset}+{len(data)}", self.cache.write(offset, data))

    def fallocate(self, path: str | None, mode: int, offset: int, size: int, fh: int) -> int:
        """Punch hole / zero range: the range reads as zeros; whole extents are freed.

        Plain allocation inside the file is a no-op (a thin volume reserves nothing). Never
        EOPNOTSUPP: the kernel would then stop sending fallocate for the whole mount.
        """
        if offset < 0 or size <= 0:
            raise mfusepy.FuseOSError(errno.EINVAL)
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            if mode & FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
                raise mfusepy.FuseOSError(errno.EINVAL)  # as fallocate(2) requires
            self._io(f"trim {offset}+{size}", self.cache.zero(offset, size))
            return 0
        if mode & ~FALLOC_FL_KEEP_SIZE:
            raise mfusepy.FuseOSError(errno.EINVAL)
        if offset + size > self.size and not mode & FALLOC_FL_KEEP_SIZE:
            raise mfusepy.FuseOSError(errno.EFBIG)  # resize with `tessera volume resize`
        return 0

    def _barrier(self) -> int:
        try:
            self.runner.call(self.cache.flush())
        except StorageError as exc:
            log.error("flush failed: %s", exc)
            raise mfusepy.FuseOSError(errno.EIO) from None
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        return self._barrier()

    def flush(self, path: str | None, fh: int) -> int:
        return self._barrier()

    def release(self, path: str | None, fh: int) -> int:
        return self._barrier()

    def setxattr(self, path: str, name: str, value: bytes, options: int,
                 position: int = 0) -> int:
        """Two attributes: the checkpoint folds every journaled write into its extent; the
        snapshot attribute (value: the snapshot's name) takes a snapshot at one point in
        time, which only the writer can (see `JournaledVolume.snapshot`)."""
        if path != FILE_PATH or name not in (CHECKPOINT_XATTR, SNAPSHOT_XATTR):
            raise mfusepy.FuseOSError(errno.ENOTSUP)
        try:
            if name == SNAPSHOT_XATTR:
                self.runner.call(self.cache.snapshot(value.decode()))
            else:
                self.runner.call(self.cache.checkpoint())
        except Conflict as exc:
            log.info("snapshot refused: %s", exc)
            raise mfusepy.FuseOSError(errno.EEXIST) from None
        except InvalidInput as exc:
            log.info("snapshot refused: %s", exc)
            raise mfusepy.FuseOSError(errno.EINVAL) from None
        except (StorageError, UnicodeDecodeError) as exc:
            log.error("checkpoint failed: %s", exc)
            raise mfusepy.FuseOSError(errno.EIO) from None
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": self.size // 4096,
                "f_bfree": 0, "f_bavail": 0, "f_namemax": 255}


async def _attach(cfg_path: Path, tenant: str, name: str, holder: str, lease_ttl_s: float,
                  max_dirty: int, journal: bool, lease_watched: int = 0,
                  ) -> tuple[Cluster, VolumeHandle, Cache]:
    cluster = await Cluster.open(load_config(cfg_path))
    try:
        svc = cluster.volumes
        handle = await svc.open(tenant, name, holder=holder, lease_ttl_s=lease_ttl_s,
                                watched=lease_watched)
    except BaseException:
        await cluster.close()
        raise
    cache: Cache = (JournaledVolume(handle, max_dirty=max_dirty) if journal
                    else ExtentCache(handle, max_dirty=max_dirty))
    cache.start()
    log.info("%s: holding up to %d MiB of writes in memory",
             "journal" if journal else "extent cache", max_dirty >> 20)
    return cluster, handle, cache


async def _detach(cluster: Cluster, handle: VolumeHandle, cache: Cache) -> None:
    """Unmount barrier: commit everything, then drop the lease and close the cluster."""
    try:
        try:
            await cache.stop()
        except StorageError as exc:
            log.error("flush failed: %s", exc)
            raise
        if isinstance(cache, JournaledVolume):
            log.info("journal: %d appends (%d bytes), %d extents written direct, %d folds, "
                     "%d compactions", cache.appends, cache.appended_bytes, cache.directs,
                     cache.folds, cache.compactions)
    finally:
        try:
            await handle.close()
        finally:
            await cluster.close()


def serve(runner: LoopThread, cfg_path: Path, tenant: str, name: str, mountpoint: Path,
          holder: str, lease_ttl_s: float, max_dirty: int, journal: bool = True,
          lease_watched: int = 0) -> int:
    cluster, handle, cache = runner.call(
        _attach(cfg_path, tenant, name, holder, lease_ttl_s, max_dirty, journal,
                lease_watched))
    handle.on_grown = GrowOnRecord(cluster.cfg.data_dir, tenant, name,  # resized elsewhere
                                   handle.vol.size)
    try:
        banner = f"volume {name} attached at {mountpoint} (lease token {handle.token})"
        fs = VolumeFS(runner, cache, banner)
        # Returns on unmount (fusermount3 -u) or SIGTERM/SIGINT (libfuse's handlers).
        try:
            PinnedFUSE(fs, str(mountpoint), foreground=True, default_permissions=True,
                         fsname=f"tessera:{name}", subtype="tessera")
        except RuntimeError as exc:  # libfuse printed why; mfusepy gives only a status
            raise RuntimeError(f"libfuse could not serve {mountpoint} (status {exc})") from None
    finally:
        runner.call(_detach(cluster, handle, cache))
    log.info("volume %s %s", name, DETACHED_MARK)  # `unmount` looks for it
    return 0


def _stop_for_starter(data_dir: Path) -> None:
    """The process that started this mount's run (a test run) is gone: undo the file system
    and loop device over our FUSE file, then stop as on SIGTERM (libfuse unmounts, we detach).
    On a thread of its own: the loop must keep serving the file system's last writes."""
    def stop() -> None:
        log.warning("the process named in $%s exited: unmounting", STARTER_ENV)
        release_file_systems(data_dir, os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop, name="starter-gone", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.block.fuse")
    p.add_argument("--config", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--volume", required=True)
    p.add_argument("--mountpoint", required=True)
    p.add_argument("--lease-ttl", type=float, default=LEASE_TTL_S)
    p.add_argument("--lease-watched", type=int, default=0,
                   help="revision of a lease record the mount command watched a ttl unrenewed")
    p.add_argument("--max-dirty-mib", type=int, default=None,
                   help=f"default {DEFAULT_MAX_DIRTY_MIB} ({NO_JOURNAL_MAX_DIRTY_MIB} with "
                        f"--no-journal)")
    p.add_argument("--no-journal", action="store_true",
                   help="whole-extent write-back cache instead of the journal")
    a = p.parse_args(argv)
    dirty = a.max_dirty_mib or (NO_JOURNAL_MAX_DIRTY_MIB if a.no_journal
                                else DEFAULT_MAX_DIRTY_MIB)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tune_malloc()  # segment bodies and extents reuse heap pages instead of faulting in fresh ones
    if not set_io_flusher():  # before any thread starts: threads inherit the flag
        log.warning("could not set PR_SET_IO_FLUSHER (errno %d)", ctypes.get_errno())
    holder = f"{socket.gethostname()}:{os.getpid()}"
    runner = LoopThread()
    data_dir = load_config(Path(a.config)).data_dir
    runner.loop.call_soon_threadsafe(watch_starters, runner.loop,
                                     lambda: _stop_for_starter(data_dir))
    try:
        return serve(runner, Path(a.config), a.tenant, a.volume, Path(a.mountpoint), holder,
                     a.lease_ttl, dirty << 20, not a.no_journal, a.lease_watched)
    except (StorageError, OSError, RuntimeError) as exc:
        print(f"tessera volume mount: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        runner.stop()


if __name__ == "__main__":
    sys.exit(main())
