"""Snapshots through the CLI of a volume whose daemon cannot fold its journal.

A snapshot freezes extents only, and `quiesce` can flush only a running daemon of this host.
A daemon stopped (SIGSTOP) within its lease holds fsynced writes in its journal: the snapshot
is refused in one line rather than frozen without them. Once that daemon is killed (-9), the
snapshot replays its journal as the next mount would: the snapshot holds every fsynced write
(clones of it: tests/unit/test_volume_snapshot_journal.py), and so does the volume.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.integration.test_volume_fencing import daemon_pid, read_at, write_at
from tests.integration.test_volumes import (  # noqa: F401 - fixture and requirements
    Vol,
    pytestmark,
    vol,
)

MiB = 1 << 20


def test_snapshot_of_a_stopped_then_killed_daemon(vol: Vol, tmp_path: Path) -> None:  # noqa: F811
    vol.run("create", "stopped", "--size", "8M")
    mnt = tmp_path / "m"
    vol.mount("stopped", mnt)
    write_at(mnt / "volume", b"S" * 4096, 3 * MiB + 4096)  # fsynced: in the journal only
    pid = daemon_pid(vol, mnt)
    os.kill(pid, signal.SIGSTOP)
    try:
        r = vol.run("snapshot", "create", "stopped", "s1", check=False)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "cannot be flushed" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert "Traceback" not in r.stderr
    finally:
        os.kill(pid, signal.SIGKILL)  # a stopped process dies too
    vol.run("snapshot", "create", "stopped", "s1")  # the dead daemon's journal is replayed
    image = tmp_path / "s1.img"
    vol.run("export", "stopped", str(image), "--snapshot", "s1")
    assert read_at(image, 4096, 3 * MiB + 4096) == b"S" * 4096
    r = vol.run("unmount", str(mnt), check=False)  # the killed daemon says so
    vol.mounts.remove(mnt)
    assert r.returncode == 1 and "may have been lost" in r.stderr, r.stderr
    vol.mount("stopped", mnt)
    assert read_at(mnt / "volume", 4096, 3 * MiB + 4096) == b"S" * 4096
    vol.unmount(mnt)
