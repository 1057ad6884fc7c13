"""A disk that loses power: one FUSE file, `disk`, whose writes stay in a volatile cache
until a flush, as a drive's write cache does (test harness for power-loss tests).

Why: kill -9 leaves the kernel's page cache, so it never loses a write the process made; a
power cut loses every write not yet flushed. This machine's kernel has no device-mapper
(dm-flakey, dm-log-writes), so the cut is made one layer up: a loop device on `disk` turns
the file system's cache flushes (fsync, fdatasync, a journal commit) into FUSE fsyncs, which
are the only moments cached writes reach the backing image. Setting the xattr `user.cut`
is the power cut: the cache is dropped and every later write is discarded (a dead disk
takes nothing), so the backing image then holds exactly what a flush made durable, or (value
`keep:<seed>`) that plus an arbitrary subset of the sectors written since the last flush.

Run: `python -m tests.volatile_disk IMAGE MOUNTPOINT` (prints `ready` when mounted; stops on
`fusermount3 -u MOUNTPOINT` or SIGTERM).
"""

from __future__ import annotations

import errno
import os
import random
import stat
import sys
import threading

import gateway.block  # noqa: F401 - libfuse 3 before mfusepy loads one (test_block_libfuse)

# isort: split
import mfusepy

PAGE = 4096
SECTOR = 512  # what a drive writes whole: a page may reach the platters in part
FILE_PATH = "/disk"
CUT_XATTR = "user.cut"


class VolatileDisk(mfusepy.Operations):
    """One file over `image`: writes cached per page until fsync; `user.cut` drops them."""

    use_ns = True

    def __init__(self, image: str) -> None:
        self.fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
        self.size = os.fstat(self.fd).st_size
        self.cache: dict[int, bytearray] = {}  # page number -> its bytes, not yet durable
        self._mu = threading.Lock()
        self.cut = False
        self.flushes = 0

    def init_with_config(self, conn_info, config_3) -> None:  # type: ignore[no-untyped-def]
        print("ready", flush=True)  # no kernel write-back cache: every write reaches us

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == FILE_PATH:
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": self.size,
                    "st_blocks": self.size // 512, "st_blksize": PAGE}
        raise mfusepy.FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", FILE_PATH[1:]]

    def open(self, path: str, flags: int) -> int:
        if path != FILE_PATH:
            raise mfusepy.FuseOSError(errno.ENOENT)
        return 0

    def _page(self, n: int) -> bytearray:
        page = self.cache.get(n)
        if page is None:
            page = bytearray(os.pread(self.fd, PAGE, n * PAGE).ljust(PAGE, b"\0"))
        return page

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        size = max(0, min(size, self.size - offset))
        out = bytearray()
        with self._mu:
            pos = offset
            while pos < offset + size:
                n, at = divmod(pos, PAGE)
                take = min(PAGE - at, offset + size - pos)
                out += self._page(n)[at:at + take]
                pos += take
        return bytes(out)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        if offset + len(data) > self.size:
            raise mfusepy.FuseOSError(errno.ENOSPC)
        with self._mu:
            if self.cut:
                return len(data)  # the power is off: nothing reaches the platters
            pos = 0
            while pos < len(data):
                n, at = divmod(offset + pos, PAGE)
                take = min(PAGE - at, len(data) - pos)
                page = self._page(n)
                page[at:at + take] = data[pos:pos + take]
                self.cache[n] = page
                pos += take
        return len(data)

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        """A cache flush: every cached page written to the image and the image fsynced."""
        with self._mu:
            if self.cut:
                return 0
            for n in sorted(self.cache):
                os.pwrite(self.fd, self.cache[n], n * PAGE)
            os.fsync(self.fd)
            self.cache.clear()
            self.flushes += 1
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        return 0  # close(2) is no barrier on a disk

    def release(self, path: str | None, fh: int) -> int:
        return 0

    def fallocate(self, path: str | None, mode: int, offset: int, size: int, fh: int) -> int:
        return 0  # a discard may be ignored by a disk

    def setxattr(self, path: str, name: str, value: bytes, options: int,
                 position: int = 0) -> int:
        """The cut. Value `keep:<seed>`: before the cache is lost, a random subset of its
        512-byte sectors (chosen by the seed, any of them, in no order) reaches the image,
        as a drive that wrote part of its cache back in its own order would leave it (only
        a flush orders writes); any other value: none does."""
        if path != FILE_PATH or name != CUT_XATTR:
            raise mfusepy.FuseOSError(errno.ENOTSUP)
        with self._mu:
            if bytes(value).startswith(b"keep:"):
                self._keep_some(random.Random(bytes(value)[5:]))
            self.cut = True
            self.cache.clear()
        return 0

    def _keep_some(self, rng: random.Random) -> None:
        """Write about half of the cached sectors to the image (and fsync it)."""
        for n in sorted(self.cache):
            page = self.cache[n]
            for at in range(0, PAGE, SECTOR):
                if rng.random() < 0.5:
                    os.pwrite(self.fd, page[at:at + SECTOR], n * PAGE + at)
        os.fsync(self.fd)

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": PAGE, "f_frsize": PAGE, "f_blocks": self.size // PAGE,
                "f_bfree": 0, "f_bavail": 0, "f_namemax": 255}


def main(argv: list[str]) -> int:
    image, mountpoint = argv
    mfusepy.FUSE(VolatileDisk(image), mountpoint, foreground=True, fsname="volatile-disk")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
