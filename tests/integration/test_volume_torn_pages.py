"""A block daemon killed right after a barrier committed, before it answered: whole pages.

A writer overwrites pages of a raw volume in rounds (O_DIRECT: each write reaches the daemon,
which holds it until its background append or the next fsync), each page self-describing (its
offset and round repeated), fsyncing every 4 rounds. The daemon SIGKILLs itself just after
barrier DIE_AT_SEQ committed (crash point `volume-after-append`), whether an fsync or its
background append ran it. After a takeover every page the writer touched reads as one whole
page of its own offset (never a mix of two rounds in a 4 KiB page, never another page's bytes,
never zeros once fsynced), from a round no older than its last returned fsync covered; and the
barrier that died unanswered left writes newer than any fsync acknowledged (replayed whole).
"""

from __future__ import annotations

import mmap
import os
import random
import struct
import threading
from pathlib import Path

from storage.testing.crash_points import ENV
from tests.integration.test_volume_fencing import read_at
from tests.integration.test_volumes import (  # noqa: F401 - same fixtures and requirements
    Vol,
    pytestmark,
    vol,
)

PAGE = 4096
STAMP = struct.Struct("<QQ")
DIE_AT_SEQ = 6  # the daemon dies right after committing this barrier
SLOTS = 512  # random pages, over extents 4-9 (sequential runs cover extents 0-9)


def page(off: int, rnd: int) -> bytes:
    return STAMP.pack(off, rnd) * (PAGE // STAMP.size)


class Writer(threading.Thread):
    """Writes rounds until the mount fails; `durable[off]` is the round an fsync covered."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.rng = path, random.Random(11)
        self.offs = [(4 << 20) + i * 3 * PAGE for i in range(SLOTS)]
        self.written: dict[int, int] = {}
        self.durable: dict[int, int] = {}
        self.syncs = 0
        self.err: OSError | None = None
        self.cv = threading.Condition()

    def run(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_DIRECT)
        buf = mmap.mmap(-1, PAGE)  # page aligned, as O_DIRECT needs
        try:
            for rnd in range(1, 1 << 30):
                picks = self.rng.sample(self.offs, 64)
                if rnd % 3 == 0:  # a sequential run: the daemon writes its extent direct
                    start = self.rng.randrange(0, 10) * (1 << 20)
                    picks = list(range(start, start + (1 << 20), PAGE))
                for off in picks:
                    buf[:] = page(off, rnd)
                    os.pwritev(fd, [buf], off)
                    with self.cv:
                        self.written[off] = rnd
                        self.cv.notify_all()
                if rnd % 4 == 0:
                    os.fsync(fd)
                    with self.cv:
                        self.durable.update(self.written)
                        self.syncs += 1
                        self.cv.notify_all()
        except OSError as exc:
            self.err = exc  # the daemon is gone
        finally:
            with self.cv:
                self.syncs = -1
                self.cv.notify_all()
            try:
                os.close(fd)
            except OSError:
                pass


def test_sigkill_mid_write_leaves_whole_pages(vol: Vol, tmp_path: Path) -> None:  # noqa: F811
    vol.run("create", "torn", "--size", "64M")
    mnt = tmp_path / "mnt"
    plain = vol.env
    vol.env = {**plain, ENV: f"volume-after-append:torn/{DIE_AT_SEQ}/"}
    try:
        vol.mount("torn", mnt, "--lease-ttl", "3")
    finally:
        vol.env = plain
    w = Writer(mnt / "volume")
    w.start()
    w.join(120)  # the daemon kills itself once barrier DIE_AT_SEQ has committed
    assert not w.is_alive() and w.err is not None
    assert w.syncs < 0 and w.durable, "no fsync returned before the daemon died"
    r = vol.run("unmount", str(mnt), check=False)
    vol.mounts.remove(mnt)
    assert r.returncode == 1, r.stderr + r.stdout
    vol.mount("torn", mnt)
    try:
        newer = 0
        for off in sorted(w.written):
            got = read_at(mnt / "volume", PAGE, off)
            floor = w.durable.get(off, 0)
            if got == bytes(PAGE):
                assert floor == 0, f"page {off}: fsynced round {floor} lost (zeros)"
                continue
            o, rnd = STAMP.unpack_from(got)
            assert got == page(o, rnd), f"page {off}: torn (a mix of rounds)"
            assert o == off, f"page {off}: holds page {o}'s bytes"
            assert floor <= rnd <= w.written[off], (off, floor, rnd)
            newer += rnd > floor
        # the barrier the daemon died in committed writes no fsync had acknowledged yet
        assert newer > 0
    finally:
        vol.unmount(mnt)
