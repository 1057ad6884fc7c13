"""The kernel's write-back budget for a volume's FUSE mount (its backing device info, bdi).

With FUSE's write-back cache the kernel holds written pages of `volume` and sends them to the
daemon later, coalesced: a page written again before it is sent costs the daemon nothing,
and neighbouring pages arrive as one request (whole extents, which the journal writes
direct). FUSE mounts get a strict share of the dirty limit: at most 1% of it, and in
proportion to how fast the device wrote back lately beside the other disks. On a busy
machine that share shrank to a few MiB, the kernel sent almost every 4 KiB page on its
own, and fio's random writes cost the daemon a request, a journal entry and a fold each.
`set_budget` states the share (sysfs `max_bytes`, root only) and keeps half of it whatever
other disks write (`min_bytes`): the kernel starts writing back at about half its share,
so the floor keeps ~1/4 of the budget held even on a busy machine. fsync stays the barrier
it was: the kernel writes every dirty page back before it sends the daemon the fsync (and
ext4 on the loop device flushes at each journal commit, every 5 s).
"""

from __future__ import annotations

import os
from pathlib import Path

BDI_ROOT = Path("/sys/class/bdi")
DEFAULT_KERNEL_DIRTY_MIB = 512


def bdi_dir(mountpoint: Path) -> Path:
    """The sysfs directory of the device behind a mount point (`MAJOR:MINOR`)."""
    dev = os.stat(mountpoint).st_dev
    return BDI_ROOT / f"{os.major(dev)}:{os.minor(dev)}"


def set_budget(mountpoint: Path, mib: int) -> str | None:
    """Let the kernel hold up to `mib` MiB of this mount's written pages, half of it
    whatever other disks write.

    Returns None when set, else why not (not root, no such knobs on this kernel, or the
    machine's dirty limit cannot reserve that much beside other mounts' reservations): the
    mount still works, with the kernel's default share (or the bound alone). The bound is
    raised before the floor: the kernel refuses a floor above the bound.
    """
    d = bdi_dir(mountpoint)
    try:
        (d / "max_bytes").write_text(str(mib << 20))
    except OSError as exc:
        return f"{d / 'max_bytes'}: {exc.strerror or exc}"
    try:
        (d / "min_bytes").write_text(str(mib << 19))
    except OSError as exc:  # the bound alone still lets a quiet machine hold that much
        return f"{d / 'min_bytes'}: {exc.strerror or exc} (bound set, no floor)"
    return None
