"""An ext4 file system on a disk that loses power (`tests.volatile_disk`), for power-loss
tests: `Disk` mounts an image through the volatile disk and a loop device, `cut` is the power
cut (all unflushed writes lost, or with `keep` an arbitrary subset of them kept), and after
`detach` the image is mounted directly (ext4 replays its journal) to see what survived.
Root only (loop devices, mounts, FUSE); `NEEDS` is the skip gate."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.contract.node_harness import REPO
from tests.volatile_disk import CUT_XATTR

NEEDS = pytest.mark.skipif(
    os.geteuid() != 0 or not all(os.path.exists(d) for d in ("/dev/fuse", "/dev/loop-control"))
    or not all(shutil.which(t) for t in ("losetup", "mkfs.ext4", "fusermount3")),
    reason="loop devices, mounts and FUSE: root, /dev/fuse and /dev/loop-control; CI has them")


def _run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class Disk:
    """An ext4 image mounted at `mnt`, first through the volatile disk, later directly."""

    base: Path
    image: Path
    mnt: Path
    fuse: subprocess.Popen[str] | None = None
    loop: str = ""
    mounted: bool = False

    def attach(self, volatile: bool) -> None:
        target = str(self.image)
        if volatile:
            (self.base / "fuse").mkdir(exist_ok=True)
            self.fuse = subprocess.Popen(
                [sys.executable, "-m", "tests.volatile_disk", str(self.image),
                 str(self.base / "fuse")], cwd=REPO, stdout=subprocess.PIPE, text=True)
            assert self.fuse.stdout is not None
            assert self.fuse.stdout.readline().strip() == "ready"
            target = str(self.base / "fuse" / "disk")
        self.loop = _run("losetup", "--find", "--show", target)
        _run("mount", "-t", "ext4", self.loop, str(self.mnt))
        self.mounted = True

    def cut(self, keep: int | None = None) -> None:
        """The power cut: the disk's cache is lost (with `keep`, a seed: but a random
        subset of its sectors) and it takes no more writes."""
        os.setxattr(self.base / "fuse" / "disk", CUT_XATTR,
                    b"1" if keep is None else f"keep:{keep}".encode())

    def detach(self) -> None:
        """Unmount, free the loop device, stop the FUSE disk: each step runs even when an
        earlier one failed or was interrupted (a second call finishes what the first left)."""
        try:
            if self.mounted and os.path.ismount(self.mnt):
                if subprocess.run(["umount", str(self.mnt)], capture_output=True).returncode:
                    _run("umount", "-l", str(self.mnt))
            self.mounted = False
        finally:
            try:
                if self.loop:
                    subprocess.run(["losetup", "-d", self.loop], capture_output=True)
                    self.loop = ""
            finally:
                self._stop_fuse()

    def _stop_fuse(self) -> None:
        if self.fuse is not None:
            subprocess.run(["fusermount3", "-u", str(self.base / "fuse")], capture_output=True)
            try:
                self.fuse.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.fuse.kill()
                self.fuse.wait()
            self.fuse = None


def made_disk(tmp_path: Path, size: int) -> Iterator[Disk]:
    """A fresh ext4 image of `size` bytes (4 KiB blocks), detached and deleted however the
    test ends (a filled image left behind costs its size in every kept basetemp; a generator
    for a fixture to yield from)."""
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(size)
    _run("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0",
         str(image))
    d = Disk(tmp_path, image, tmp_path / "mnt")
    d.mnt.mkdir()
    try:
        yield d
    finally:
        try:
            d.detach()
        finally:
            image.unlink(missing_ok=True)
