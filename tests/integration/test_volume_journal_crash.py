"""Crash the block daemon mid-workload: every fsynced write survives through the journal.

ext4 on a journaled volume (FUSE + loop) takes small files, random 4 KiB overwrites and
whole rewrites of a 2 MiB file (sequential runs the daemon writes directly as extents, between
journal appends), each recorded only once its fsync returned; the daemon is killed with SIGKILL while the
writer is still going, leaving journal segments that were never folded into extents. The
next mount replays them: every recorded write reads back, and fsck finds the file system
clean.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import threading
from pathlib import Path

from storage.cluster import Cluster
from storage.config import load_config
from storage.keyspace import journal_prefix
from storage.volume_records import scan_prefix
from tests.integration.test_volumes import (  # noqa: F401 - same fixtures and requirements
    Vol,
    _states,
    fsck_clean,
    pytestmark,
    vol,
)

PAGE = 4096
RAND_PAGES = 2048  # an 8 MiB file of random overwrites
BIG = 2 << 20  # a file rewritten whole, sequentially


class Workload(threading.Thread):
    """Writes until the file system fails; remembers only what an fsync made durable."""

    def __init__(self, root: Path, seed: int) -> None:
        super().__init__(daemon=True)
        self.root, self.rnd = root, random.Random(seed)
        self.files: dict[str, str] = {}
        self.pages: dict[int, bytes] = {}
        self.big = b""  # its content at the last fdatasync
        self.big_next = b""  # the rewrite in flight (its pages may land before the kill)
        self.durable = 0
        self.progress = threading.Condition()

    def _record(self) -> None:
        with self.progress:
            self.durable += 1
            self.progress.notify_all()

    def run(self) -> None:
        dfd = os.open(self.root, os.O_RDONLY)
        rfd = os.open(self.root / "rand", os.O_RDWR)
        bfd = os.open(self.root / "big", os.O_RDWR)
        try:
            for i in range(1_000_000):
                if i % 5 == 1:
                    self.big_next = self.rnd.randbytes(BIG)
                    os.pwrite(bfd, self.big_next, 0)
                    os.fdatasync(bfd)
                    self.big = self.big_next
                elif i % 3 == 0:
                    name = f"f{i}"
                    data = self.rnd.randbytes(self.rnd.choice([100, 4096, 50_000]))
                    fd = os.open(self.root / name, os.O_WRONLY | os.O_CREAT, 0o644)
                    try:
                        os.write(fd, data)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    os.fsync(dfd)  # the directory entry too
                    self.files[name] = hashlib.sha256(data).hexdigest()
                else:
                    page = self.rnd.randrange(RAND_PAGES)
                    data = self.rnd.randbytes(PAGE)
                    os.pwrite(rfd, data, page * PAGE)
                    os.fdatasync(rfd)
                    self.pages[page] = data
                self._record()
        except OSError:
            pass  # the daemon is gone: the file system fails from here on
        finally:
            with self.progress:
                self.durable = -1
                self.progress.notify_all()
            for fd in (bfd, rfd, dfd):
                try:
                    os.close(fd)
                except OSError:
                    pass


async def _journal_segments(v: Vol, name: str) -> set[bytes]:
    c = await Cluster.open(load_config(Path(v.cluster.env["TESSERA_CONFIG"])))
    try:
        vid = (await c.volumes.get("default", name)).id
        return {i.key async for i in scan_prefix(c.meta, journal_prefix(vid))}
    finally:
        await c.close()


def test_kill_mid_workload_replays_journal(vol: Vol, tmp_path: Path) -> None:  # noqa: F811
    vol.run("create", "jcrash", "--size", "64M")
    mnt = tmp_path / "mnt"
    vol.mount("jcrash", mnt, "--fs", "ext4", "--lease-ttl", "3")
    zeros = bytes(RAND_PAGES * PAGE)
    (mnt / "rand").write_bytes(zeros)
    (mnt / "big").write_bytes(bytes(BIG))
    for name in ("rand", "big"):
        fd = os.open(mnt / name, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    w = Workload(mnt, seed=11)
    w.start()
    with w.progress:  # kill while the writer is mid-stream, after plenty of barriers
        w.progress.wait_for(lambda: w.durable >= 150 or w.durable < 0, timeout=300)
        assert w.durable >= 150, "the workload stopped early"
        state = next(s for s in _states(vol) if s.volume == "jcrash")
        os.kill(state.pid, signal.SIGKILL)
    w.join(timeout=120)
    assert not w.is_alive()
    left = asyncio.run(_journal_segments(vol, "jcrash"))
    assert left, "the crash left no journal to replay"
    r = vol.run("unmount", str(mnt), check=False)
    vol.mounts.remove(mnt)
    assert r.returncode == 1 and "may have been lost" in r.stderr, r.stderr
    vol.mount("jcrash", mnt, "--fs", "ext4")  # attach replays the journal
    assert not left & asyncio.run(_journal_segments(vol, "jcrash"))  # folded and retired
    for name, digest in w.files.items():
        assert hashlib.sha256((mnt / name).read_bytes()).hexdigest() == digest, name
    big = (mnt / "big").read_bytes()
    assert w.big and len(big) == BIG
    for at in range(0, BIG, PAGE):  # each page as synced, or from the unsynced rewrite
        assert big[at:at + PAGE] in (w.big[at:at + PAGE], w.big_next[at:at + PAGE]), at
    raw = (mnt / "rand").read_bytes()
    for page, data in w.pages.items():
        assert raw[page * PAGE:(page + 1) * PAGE] == data, page
    vol.unmount(mnt)
    fsck_clean(vol, "jcrash", tmp_path)
