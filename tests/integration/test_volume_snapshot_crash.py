"""Snapshots through the CLI of a volume whose daemon cannot fold its journal.

A snapshot freezes extents only, and `quiesce` can flush only a running daemon of this host.
A daemon stopped (SIGSTOP) within its lease holds fsynced writes in its journal: the snapshot
is refused in one line rather than frozen without them. Once that daemon is killed (-9), the
snapshot replays its journal as the next mount would: the snapshot holds every fsynced write
(clones of it: tests/unit/test_volume_snapshot_journal.py), and so does the volume. A mount
arriving while a snapshot holds the volume for that replay waits for it, then mounts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.integration.test_volume_fencing import daemon_pid, read_at, write_at
from tests.integration.test_volumes import (  # noqa: F401 - fixture and requirements
    Vol,
    _open,
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


def test_mount_waits_for_a_snapshot_replaying_the_journal(vol: Vol,  # noqa: F811
                                                          tmp_path: Path) -> None:
    """review13c: a mount during a snapshot's replay failed at once ("attached by
    snapshot:..."); it now waits for the snapshot to detach, then mounts."""
    vol.run("create", "replaying", "--size", "8M")
    mnt = tmp_path / "m"

    async def scenario() -> None:
        c, svc = await _open(vol)
        try:
            h = await svc.open("default", "replaying", holder="snapshot:0a1b2c3d")
            try:
                p = subprocess.Popen([sys.executable, "-m", "ops.cli", "volume", "mount",
                                      "replaying", str(mnt)], env=vol.env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                vol.mounts.append(mnt)
                assert p.stderr is not None
                line = await asyncio.to_thread(p.stderr.readline)  # it says it waits
                assert "held by snapshot:0a1b2c3d" in line and "waiting" in line, line
            finally:
                await h.close()  # the snapshot is done
            out, err = await asyncio.to_thread(p.communicate, timeout=120)
            assert p.returncode == 0 and "mounted" in out, out + err
        finally:
            await c.close()
    asyncio.run(scenario())
    write_at(mnt / "volume", b"W" * 4096, 4096)
    assert read_at(mnt / "volume", 4096, 4096) == b"W" * 4096
    vol.unmount(mnt)
