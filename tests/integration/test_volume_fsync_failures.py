"""fsync of a block volume while too many storage nodes are down or the metadata store is
stalled: EIO, never a false success.

Six of nine nodes (two whole zones) are killed under a mounted volume: fewer than k=4 nodes
are left, so no segment or extent can be stored. An fsync then must fail (EIO); the writes it
covered stay pending in the daemon (the kernel's pages are clean by then: a daemon that dropped
them on the failure would lose them silently, the "fsyncgate" pattern). Once the nodes are
back, the next fsync succeeds. Then the SQLite metadata store is held locked (another process
in a write transaction): the fsync of new pages fails (EIO, after the store's busy timeout)
and the next one, lock released, commits them. Every success is a real barrier: the daemon
is SIGKILLed and the volume, taken over by a new mount, reads back every page fsynced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster, wait_for
from tests.integration.test_volume_fencing import daemon_pid, read_at
from tests.integration.test_volumes import (  # noqa: F401 - same fixtures and requirements
    Vol,
    fresh_vol,
    pytestmark,
)

PAGE = 4096
DOWN = ("n4", "n5", "n6", "n7", "n8", "n9")  # az2 and az3: three nodes left, k = 4


def restart(cluster: LocalCluster, ids: tuple[str, ...]) -> list[subprocess.Popen[str]]:
    """Start the nodes again, all at once (`LocalCluster.restart_node` waits for each)."""
    procs = {i: subprocess.Popen([sys.executable, "-m", "nodes", "--config",
                                  str(cluster.data / "tessera.toml"), "--id", i],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for i in ids}
    for i, p in procs.items():
        assert p.stdout is not None
        line = p.stdout.readline()
        assert "ready" in line, (i, line)
        (cluster.data / "run" / f"{i}.pid").write_text(f"{p.pid}\n")
    return list(procs.values())


def fsync_or_eio(fd: int) -> bool:
    """True if fsync succeeded; False if it failed with EIO (any other error fails the test)."""
    try:
        os.fsync(fd)
    except OSError as exc:
        assert exc.errno == errno.EIO, exc
        return False
    return True


def test_fsync_with_nodes_down_or_store_stalled_fails_then_a_later_one_is_durable(
        fresh_vol: Vol, tmp_path: Path) -> None:  # noqa: F811
    vol, cluster = fresh_vol, fresh_vol.cluster
    vol.run("create", "nd", "--size", "64M")
    mnt = tmp_path / "mnt"
    vol.mount("nd", mnt, "--lease-ttl", "3")
    rnd = random.Random(7)
    run = rnd.randbytes(1 << 20)  # extent 8 whole: written directly as an extent, no journal
    pages = {(8 << 20) + i: run[i:i + PAGE] for i in range(0, len(run), PAGE)}
    pages |= {rnd.randrange(16 << 8, 64 << 8) * PAGE: rnd.randbytes(PAGE) for _ in range(32)}
    procs: list[subprocess.Popen[str]] = []
    fd = os.open(mnt / "volume", os.O_RDWR)
    try:
        os.pwrite(fd, b"x" * PAGE, 0)
        os.fsync(fd)  # attached and committing before the nodes go
        for node in DOWN:
            cluster.kill(node)
        assert os.pwrite(fd, run, 8 << 20) == len(run)
        for off, data in list(pages.items())[len(run) // PAGE:]:
            assert os.pwrite(fd, data, off) == PAGE
        with pytest.raises(OSError) as failed:
            os.fsync(fd)
        assert failed.value.errno == errno.EIO
        procs += restart(cluster, DOWN)
        # The daemon places stripes on nodes its health view calls up: until it has seen
        # them back an fsync may still fail, EIO (never a success), and then one succeeds
        # with the pages the failed fsync covered.
        wait_for(lambda: fsync_or_eio(fd), "an fsync to succeed with the nodes back")
        stalled = {rnd.randrange(16 << 8, 64 << 8) * PAGE: rnd.randbytes(PAGE)
                   for _ in range(16)}
        for off, data in stalled.items():
            assert os.pwrite(fd, data, off) == PAGE
        pages |= stalled
        held = sqlite3.connect(cluster.db_path, isolation_level=None)
        try:  # the metadata store stalls: no segment can commit
            held.execute("BEGIN IMMEDIATE")
            with pytest.raises(OSError) as failed:
                os.fsync(fd)
            assert failed.value.errno == errno.EIO
        finally:
            held.close()
        os.fsync(fd)
        pid = daemon_pid(vol, mnt)
        fd, closing = -1, fd
        os.close(closing)  # a flush: nothing left to commit
        os.kill(pid, signal.SIGKILL)
        r = vol.run("unmount", str(mnt), check=False)
        vol.mounts.remove(mnt)
        assert r.returncode == 1, r.stderr + r.stdout
        vol.mount("nd", mnt)  # a dead daemon's lease on this host is taken over at once
        for off, data in pages.items():
            assert read_at(mnt / "volume", PAGE, off) == data, off
        vol.unmount(mnt)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if fd >= 0:
            with contextlib.suppress(OSError):  # close is a flush: EIO if the daemon fails
                os.close(fd)
