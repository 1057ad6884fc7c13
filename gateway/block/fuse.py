"""The FUSE block driver: one file, `volume`, whose bytes are an attached Tessera volume.

Run as its own process (`python -m gateway.block.fuse`), usually started by
`tessera volume mount`. It opens the cluster with the storage library directly, takes the
volume's attach lease, and serves requests concurrently on asyncio (pyfuse3). Writes go to a
bounded write-back cache; `fsync`, `flush`, `release` and unmount are durability barriers.
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
from pathlib import Path

import pyfuse3
import pyfuse3.asyncio

from gateway.block.cache import ExtentCache
from storage.cluster import Cluster
from storage.config import load_config
from storage.errors import StorageError
from storage.volumes import LEASE_TTL_S, VolumeHandle, VolumeService

PR_SET_IO_FLUSHER = 57
FILE_INODE = pyfuse3.ROOT_INODE + 1
FILE_NAME = b"volume"
log = logging.getLogger("tessera.block")


def set_io_flusher() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) == 0


class VolumeFS(pyfuse3.Operations):
    """A directory holding one regular file backed by the write-back cache."""

    enable_writeback_cache = True  # the kernel batches small writes; fsync still reaches us

    def __init__(self, cache: ExtentCache) -> None:
        super().__init__()
        self.cache = cache
        self.size = cache.vol.vol.size

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        if inode == pyfuse3.ROOT_INODE:
            a.st_mode = stat.S_IFDIR | 0o755
            a.st_nlink = 2
        elif inode == FILE_INODE:
            a.st_mode = stat.S_IFREG | 0o600
            a.st_nlink = 1
            a.st_size = self.size
            a.st_blocks = self.size // 512
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        a.st_blksize = 4096
        a.attr_timeout = 300
        a.entry_timeout = 300
        return a

    async def getattr(self, inode, ctx=None):  # type: ignore[no-untyped-def]
        return self._attr(inode)

    async def lookup(self, parent_inode, name, ctx=None):  # type: ignore[no-untyped-def]
        if parent_inode != pyfuse3.ROOT_INODE or name != FILE_NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(FILE_INODE)

    async def opendir(self, inode, ctx):  # type: ignore[no-untyped-def]
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh, start_id, token):  # type: ignore[no-untyped-def]
        if start_id == 0:
            pyfuse3.readdir_reply(token, FILE_NAME, self._attr(FILE_INODE), 1)

    async def open(self, inode, flags, ctx):  # type: ignore[no-untyped-def]
        if inode != FILE_INODE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def setattr(self, inode, attr, fields, fh, ctx):  # type: ignore[no-untyped-def]
        if fields.update_size and attr.st_size != self.size:
            raise pyfuse3.FUSEError(errno.EPERM)  # resize with `tessera volume resize`
        return self._attr(inode)

    async def read(self, fh, off, size):  # type: ignore[no-untyped-def]
        try:
            return await self.cache.read(off, size)
        except StorageError as exc:
            log.error("read %d+%d failed: %s", off, size, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None

    async def write(self, fh, off, buf):  # type: ignore[no-untyped-def]
        if off >= self.size:
            raise pyfuse3.FUSEError(errno.ENOSPC)
        try:
            return await self.cache.write(off, bytes(buf))
        except StorageError as exc:
            log.error("write %d+%d failed: %s", off, len(buf), exc)
            raise pyfuse3.FUSEError(errno.EIO) from None

    async def _barrier(self) -> None:
        try:
            await self.cache.flush()
        except StorageError as exc:
            log.error("flush failed: %s", exc)
            raise pyfuse3.FUSEError(errno.EIO) from None

    async def fsync(self, fh, datasync):  # type: ignore[no-untyped-def]
        await self._barrier()

    async def flush(self, fh):  # type: ignore[no-untyped-def]
        await self._barrier()

    async def release(self, fh):  # type: ignore[no-untyped-def]
        await self._barrier()

    async def statfs(self, ctx):  # type: ignore[no-untyped-def]
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = self.size // 4096
        s.f_bfree = s.f_bavail = 0
        s.f_namemax = 255
        return s


async def serve(cfg_path: Path, tenant: str, name: str, mountpoint: Path, holder: str,
                lease_ttl_s: float, max_dirty: int) -> int:
    cluster = await Cluster.open(load_config(cfg_path))
    handle: VolumeHandle | None = None
    try:
        svc = VolumeService(cluster.cfg, cluster.meta, cluster.tenants, cluster.stripes)
        handle = await svc.open(tenant, name, holder=holder, lease_ttl_s=lease_ttl_s)
        cache = ExtentCache(handle, max_dirty=max_dirty)
        cache.start()
        fs = VolumeFS(cache)
        opts = set(pyfuse3.default_options)
        opts |= {f"fsname=tessera:{name}", "subtype=tessera"}
        pyfuse3.init(fs, str(mountpoint), opts)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, pyfuse3.terminate)
        print(f"volume {name} attached at {mountpoint} (lease token {handle.token})",
              flush=True)
        try:
            await pyfuse3.main()
        finally:
            pyfuse3.close(unmount=True)
            await cache.stop()  # unmount is a durability barrier
        return 0
    finally:
        if handle is not None:
            await handle.close()
        await cluster.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.block.fuse")
    p.add_argument("--config", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--volume", required=True)
    p.add_argument("--mountpoint", required=True)
    p.add_argument("--lease-ttl", type=float, default=LEASE_TTL_S)
    p.add_argument("--max-dirty-mib", type=int, default=64)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not set_io_flusher():
        log.warning("could not set PR_SET_IO_FLUSHER (errno %d)", ctypes.get_errno())
    pyfuse3.asyncio.enable()
    holder = f"{socket.gethostname()}:{os.getpid()}"
    try:
        return asyncio.run(serve(Path(a.config), a.tenant, a.volume, Path(a.mountpoint), holder,
                                 a.lease_ttl, a.max_dirty_mib << 20))
    except (StorageError, OSError, RuntimeError) as exc:
        print(f"tessera volume mount: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
