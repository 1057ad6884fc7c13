"""One writer per volume, on SQLite and on etcd: a stopped writer is fenced for good.

The repro of issue 12: daemon A holds a volume with a write it has not committed and is
stopped (SIGSTOP); its lease expires, B attaches, writes and detaches cleanly, C attaches and
writes with fsync; A resumes. Lease tokens never repeat (B and C get new ones even after a
clean release), so A can neither renew C's lease nor commit: its fsync fails with EIO and
C's bytes are what the volume holds.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster
from tests.integration.test_volumes import (  # noqa: F401 - same requirements
    Vol,
    fsck_clean,
    pytestmark,
    verify_tree,
)

MiB = 1 << 20


@pytest.fixture(scope="module", params=["sqlite", "etcd"])
def meta_cluster(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One cluster per metadata backend, shared by this module's tests."""
    if request.param == "etcd" and shutil.which("etcd") is None:
        pytest.fail("etcd is not installed")
    c = LocalCluster(tmp_path_factory.mktemp(f"fence-{request.param}"),
                     metadata=request.param).start()
    yield c
    c.stop()


@pytest.fixture
def mvol(meta_cluster: LocalCluster) -> Iterator[Vol]:
    v = Vol(meta_cluster)
    yield v
    v.cleanup()


def daemon_pid(vol: Vol, target: Path) -> int:
    from gateway.block.mount import mounted_states

    return next(s.pid for s in mounted_states(Path(vol.cluster.data))
                if s.target == str(target.resolve()))


def stop_outside_a_commit(vol: Vol, pid: int) -> None:
    """SIGSTOP `pid` at a moment it holds no SQLite write lock. On SQLite (one host, one
    writer per database file) a process stopped inside a commit holds the lock for as long
    as it is stopped, and every metadata write on the host waits for it: no attach could
    ever happen (atkblock20: 2 of 16 runs stopped A mid-append). etcd has no such lock."""
    os.kill(pid, signal.SIGSTOP)
    if vol.cluster.metadata != "sqlite":
        return
    db = Path(vol.cluster.data) / "meta" / "tessera.db"
    assert db.is_file(), db  # (connect would make an empty one: a check of nothing)
    deadline = time.monotonic() + 60
    while True:
        con = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")  # the write lock: free unless A holds it
            con.execute("ROLLBACK")
            return
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc), exc
        finally:
            con.close()
        os.kill(pid, signal.SIGCONT)  # let it finish that commit, then stop it again
        assert time.monotonic() < deadline, "the daemon never left its commit"
        time.sleep(0.01)
        os.kill(pid, signal.SIGSTOP)


def mount_when_free(vol: Vol, name: str, target: Path, *extra: str) -> None:
    """Mount as soon as the previous holder's lease has expired (bounded by a deadline)."""
    deadline = time.monotonic() + 60
    while True:
        r = vol.run("mount", *extra, name, str(target), check=False)
        if r.returncode == 0:
            vol.mounts.append(target)
            return
        assert "already attached" in r.stderr, r.stderr
        assert time.monotonic() < deadline, "the stopped writer's lease never expired"
        time.sleep(0.2)


def write_at(path: Path, data: bytes, offset: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_at(path: Path, n: int, offset: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, offset)
    finally:
        os.close(fd)


def token(vol: Vol, name: str) -> int:
    return int(json.loads(vol.run("show", name, "--json").stdout)["attached_by"]["token"])


# A's writer lives in a process of its own: a FUSE file's every close() is a flush request,
# and a child forked by this test would close an inherited descriptor on the stopped daemon.
WRITER_A = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, b"A" * (4 << 20), 0)  # not fsynced: it stays in a cache
print("written", flush=True)
sys.stdin.readline()
try:
    os.pwrite(fd, b"a" * 4096, 8 << 20)
    os.fsync(fd)
    print("committed", flush=True)
except OSError as exc:
    print(f"errno {exc.errno}", flush=True)
try:
    os.close(fd)
except OSError:
    pass
"""


def test_stopped_writer_is_fenced_after_a_clean_handover(mvol: Vol, tmp_path: Path) -> None:
    mvol.run("create", "fence", "--size", "32M")
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    mvol.mount("fence", a, "--lease-ttl", "2")
    t_a = token(mvol, "fence")
    writer = subprocess.Popen([sys.executable, "-c", WRITER_A, str(a / "volume")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "written"
        pid_a = daemon_pid(mvol, a)
        stop_outside_a_commit(mvol, pid_a)
        try:
            mount_when_free(mvol, "fence", b, "--lease-ttl", "30")
            t_b = token(mvol, "fence")
            write_at(b / "volume", b"B" * (4 * MiB), 0)
            mvol.unmount(b)  # a clean release: the next token must still be larger
            mvol.mount("fence", c, "--lease-ttl", "30")
            t_c = token(mvol, "fence")
            write_at(c / "volume", b"CCCC", 0)
        finally:
            os.kill(pid_a, signal.SIGCONT)
        assert t_a < t_b < t_c, (t_a, t_b, t_c)
        writer.stdin.write("go\n")  # A's stale write and a new one: neither may commit
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == f"errno {errno.EIO}"
    finally:
        writer.kill()
        writer.wait()
    assert token(mvol, "fence") == t_c  # A did not renew C's lease as its own
    assert read_at(c / "volume", 8, 0) == b"CCCC" + b"B" * 4
    r = mvol.run("unmount", str(a), check=False)  # A's daemon could not flush: it says so
    mvol.mounts.remove(a)
    assert r.returncode == 1 and "may have been lost" in r.stderr, r.stderr
    mvol.unmount(c)
    mvol.mount("fence", a)
    assert read_at(a / "volume", 8, 0) == b"CCCC" + b"B" * 4
    assert read_at(a / "volume", 4096, 8 * MiB) == bytes(4096)
    mvol.unmount(a)


def test_ext4_crash_with_snapshots_during_writes(mvol: Vol, tmp_path: Path) -> None:
    """kill -9 of the daemon under an ext4 file writer, with two snapshots taken meanwhile:
    every file fsynced before the kill is intact after remount, fsck is clean, and a clone
    of the last snapshot holds every file fsynced before that snapshot was asked for."""
    mvol.run("create", "crashsnap", "--size", "128M")
    mnt = tmp_path / "mnt"
    mvol.mount("crashsnap", mnt, "--fs", "ext4")
    rng = random.Random(1212)
    fsynced: dict[str, str] = {}
    before_snap: dict[str, dict[str, str]] = {}
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            data = rng.randbytes(rng.choice([4096, 70_000, 300_000, 1_300_000]))
            p = mnt / f"d{i % 4}" / f"f{i}"
            try:
                p.parent.mkdir(exist_ok=True)
                with open(p, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                dfd = os.open(p.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError:
                return  # the device died under us: from here on nothing is promised
            fsynced[str(p.relative_to(mnt))] = hashlib.sha256(data).hexdigest()
            i += 1

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 120
        while len(fsynced) < n:
            assert t.is_alive() and time.monotonic() < deadline, len(fsynced)
            time.sleep(0.05)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for n, snap in ((6, "s1"), (14, "s2")):
            wait_for(n)
            before_snap[snap] = dict(fsynced)
            mvol.run("snapshot", "create", "crashsnap", snap)  # while the writer writes
        wait_for(len(fsynced) + 6)
        os.kill(daemon_pid(mvol, mnt), signal.SIGKILL)
    except BaseException as exc:
        failures.append(exc)
    finally:
        stop.set()
        t.join(120)
    assert not failures and not t.is_alive(), failures
    r = mvol.run("unmount", str(mnt), check=False)
    mvol.mounts.remove(mnt)
    assert r.returncode == 1 and "may have been lost" in r.stderr, r.stderr
    mvol.mount("crashsnap", mnt, "--fs", "ext4")  # at once: the dead daemon holds nothing
    present = [rel for rel, digest in fsynced.items() if (mnt / rel).exists()
               and hashlib.sha256((mnt / rel).read_bytes()).hexdigest() == digest]
    mvol.unmount(mnt)
    fsck_clean(mvol, "crashsnap", tmp_path)
    backend = mvol.cluster.metadata
    print(f"\ncrash tally [{backend}]: fsynced {len(fsynced)}, present {len(present)}, "
          f"lost {len(fsynced) - len(present)} (snapshots s1, s2 during the writes)")
    assert len(present) == len(fsynced), sorted(set(fsynced) - set(present))
    mvol.run("clone", "crashsnap@s2", "crashsnap-c")
    cm = tmp_path / "clone"
    mvol.mount("crashsnap-c", cm, "--fs", "ext4")
    verify_tree(cm, before_snap["s2"])
    mvol.unmount(cm)
    fsck_clean(mvol, "crashsnap-c", tmp_path)


def test_a_host_whose_clock_runs_ahead_cannot_take_or_delete_an_attached_volume(
        mvol: Vol, tmp_path: Path) -> None:
    """The writer holds the lease (ttl 10 s: a renewal every 3.3 s, so a stall of seconds on
    a loaded box does not let the taker in) and renews it; a second host's clock runs a
    minute ahead (libfaketime), so by its clock the lease expired long ago. Its `show` names
    the writer; its mount is refused in one line before any daemon starts (the pre-check
    judges the lease as a taker does: seen renewed on its own monotonic clock); its delete
    is refused; and the writer keeps committing. Before, that host attached at once (the writer's fsync failed EIO) and
    deleted the attached volume; then its pre-check called the lease free and a daemon
    started, only to be refused a ttl later."""
    from tests.integration.test_clock_skew import FAKETIME, skewed_env

    if not FAKETIME.exists():
        pytest.skip("libfaketime is not installed (Debian package faketime)")
    mvol.run("create", "skewed", "--size", "16M")
    a, b = tmp_path / "a", tmp_path / "b"
    mvol.mount("skewed", a, "--lease-ttl", "10")
    t_a = token(mvol, "skewed")
    logs = mvol.cluster.data / "volumes" / "logs"
    daemons = set(logs.glob("*.skewed.*.log"))  # one log per mount's daemon
    ahead = Vol(mvol.cluster)
    ahead.env = {**skewed_env("+60s"), **mvol.cluster.env}
    try:
        shown = json.loads(ahead.run("show", "skewed", "--json").stdout)
        assert shown["attached_by"]["token"] == t_a, shown  # as a mount would find it
        r = ahead.run("mount", "skewed", str(b), check=False)
        if r.returncode == 0:
            ahead.mounts.append(b)
        assert r.returncode == 1 and "already attached" in r.stderr, r.stderr + r.stdout
        assert "(lease token" in r.stderr, r.stderr  # the pre-check's refusal, not a daemon's
        assert set(logs.glob("*.skewed.*.log")) == daemons  # no daemon was started
        r = ahead.run("delete", "skewed", check=False)
        assert r.returncode == 1 and "is attached by" in r.stderr, r.stderr + r.stdout
        assert token(mvol, "skewed") == t_a
        write_at(a / "volume", b"still mine", 4096)  # fsync: EIO if it had been fenced
        assert read_at(a / "volume", 10, 4096) == b"still mine"
    finally:
        ahead.cleanup()
    mvol.unmount(a)


SNAPSHOT_ELSEWHERE = r'''
import asyncio, os, sys
from pathlib import Path
from storage.cluster import Cluster
from storage.config import load_config
async def go() -> None:
    c = await Cluster.open(load_config(Path(sys.argv[1])))
    try:
        cred = await c.tenants.credential(os.environ["AWS_ACCESS_KEY_ID"])
        try:  # flushed=[]: no daemon of this host quiesced, as on another host
            print("SNAPSHOT", await c.volumes.snapshot(cred.tenant, sys.argv[2], "s1", flushed=[]))
        except Exception as e:
            print("REFUSED", type(e).__name__, e)
    finally:
        await c.close()
asyncio.run(go())
'''


def test_a_snapshot_from_a_host_whose_clock_runs_ahead_is_refused_not_looping(
        mvol: Vol, tmp_path: Path) -> None:
    """A live writer (ttl 10 s, so a stall of seconds does not let the snapshot in) with fsynced writes in its journal; a snapshot from a host
    whose clock runs a minute ahead (libfaketime) and has no daemon of its own to flush is
    refused (the writer cannot be flushed from there). Before, its wall clock called the
    lease free, `open` found it held, and the snapshot retried forever (review17f)."""
    from tests.integration.test_clock_skew import FAKETIME, skewed_env

    if not FAKETIME.exists():
        pytest.skip("libfaketime is not installed (Debian package faketime)")
    mvol.run("create", "skewsnap", "--size", "16M")
    a = tmp_path / "a"
    mvol.mount("skewsnap", a, "--lease-ttl", "10")
    stop = threading.Event()

    def writer() -> None:  # keeps the journal holding segments
        i = 0
        while not stop.is_set():
            write_at(a / "volume", os.urandom(4096), 4096 * (i % 64))
            i += 1
    t = threading.Thread(target=writer)
    t.start()
    try:
        r = subprocess.run(
            [sys.executable, "-c", SNAPSHOT_ELSEWHERE, str(mvol.cluster.data / "tessera.toml"),
             "skewsnap"], env={**skewed_env("+60s"), **mvol.cluster.env},
            capture_output=True, text=True, timeout=120)  # (it looped until killed)
    finally:
        stop.set()
        t.join()
    assert "REFUSED VolumeAttached" in r.stdout and "cannot be flushed" in r.stdout, (
        r.stdout + r.stderr[-2000:])
    mvol.unmount(a)
