"""Block volumes end to end: real FUSE mounts, ext4 on a loop device, snapshots, leases.

Needs root, /dev/fuse, fuse3, losetup and e2fsprogs (CI installs them). Every test detaches
what it mounted in a finalizer, even on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import hashlib
import json
import mmap
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.block.mount import CHECKPOINT_XATTR, SNAPSHOT_XATTR
from gateway.block.writeback import bdi_dir
from storage.cluster import Cluster
from storage.config import load_config
from storage.errors import Conflict, DataUnavailable
from storage.volumes import Fenced, VolumeAttached, VolumeService, extent_prefix
from tests.integration.killed_run import VOLUME_TEST, run_and_kill

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"),
    reason="block volume tests need root, /dev/fuse and fuse3")


class Vol:
    """Runs `tessera volume ...` with the cluster's environment; tracks mounts to undo."""

    def __init__(self, cluster) -> None:  # type: ignore[no-untyped-def]
        self.cluster = cluster
        self.env = {**os.environ, **cluster.env}
        self.mounts: list[Path] = []

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-m", "ops.cli", "volume", *args],
                           env=self.env, capture_output=True, text=True, timeout=300)
        if check and r.returncode != 0:
            raise AssertionError(f"tessera volume {' '.join(args)}: {r.stderr}{r.stdout}")
        return r

    def mount(self, name: str, d: Path, *extra: str) -> None:
        self.run("mount", *extra, name, str(d))
        self.mounts.append(d)

    def unmount(self, d: Path) -> None:
        self.run("unmount", str(d))
        self.mounts.remove(d)

    def cleanup(self) -> None:
        for d in reversed(self.mounts):
            r = self.run("unmount", str(d), check=False)
            if r.returncode != 0:  # last resort: do not leave mounts behind
                subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.fixture
def vol(cluster) -> Iterator[Vol]:  # type: ignore[no-untyped-def]
    v = Vol(cluster)
    yield v
    v.cleanup()


@pytest.fixture
def fresh_vol(fresh_cluster) -> Iterator[Vol]:  # type: ignore[no-untyped-def]
    v = Vol(fresh_cluster)
    yield v
    v.cleanup()


def write_tree(root: Path, seed: int, files: int = 40) -> dict[str, str]:
    rng = random.Random(seed)
    sums = {}
    for i in range(files):
        p = root / f"d{i % 5}" / f"f{seed}-{i}"
        p.parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(rng.choice([100, 4096, 70_000, 1_300_000]))
        p.write_bytes(data)
        sums[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return sums


def verify_tree(root: Path, sums: dict[str, str]) -> None:
    for rel, digest in sums.items():
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest, rel


def fsck_clean(vol: Vol, name: str, tmp: Path) -> None:
    """Expose the raw volume (no file system) and run fsck.ext4 -fn on it."""
    raw = tmp / f"raw-{name}"
    vol.mount(name, raw)
    try:
        r = subprocess.run(["fsck.ext4", "-fn", str(raw / "volume")], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        vol.unmount(raw)


def sync_tree(root: Path) -> None:
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.sync()
    finally:
        os.close(fd)


def test_ext4_roundtrip_and_fsck(vol: Vol, tmp_path: Path) -> None:
    vol.run("create", "rt", "--size", "128M")
    mnt = tmp_path / "mnt"
    vol.mount("rt", mnt, "--fs", "ext4")
    sums = write_tree(mnt, seed=1, files=24)
    sync_tree(mnt)
    vol.unmount(mnt)
    vol.mount("rt", mnt, "--fs", "ext4")
    verify_tree(mnt, sums)
    vol.unmount(mnt)
    fsck_clean(vol, "rt", tmp_path)
    out = vol.run("show", "rt", "--json").stdout
    assert '"attached_by"' not in out


def test_second_mount_refused(vol: Vol, tmp_path: Path) -> None:
    """Same host or another, with or without --fs: one line, nothing mounted or started."""
    vol.run("create", "excl", "--size", "64M")
    vol.mount("excl", tmp_path / "a", "--fs", "ext4")
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    for extra in ((), ("--fs", "ext4")):
        target = tmp_path / f"b{len(extra)}"
        r = vol.run("mount", *extra, "excl", str(target), check=False)
        assert r.returncode == 1 and "already attached" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not os.path.ismount(target)
        assert [s.target for s in _states(vol)].count(str(target.resolve())) == 0
    assert subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout == loops
    vol.unmount(tmp_path / "a")

    async def elsewhere() -> None:  # a writer in another process (another host, say)
        c, svc = await _open(vol)
        try:
            h = await svc.open("default", "excl", holder="otherhost:4242")
            try:
                for extra in ((), ("--fs", "ext4")):
                    r = await asyncio.to_thread(vol.run, "mount", *extra, "excl",
                                                str(tmp_path / "c"), check=False)
                    assert r.returncode == 1 and "already attached by otherhost:4242" in \
                        r.stderr, r.stderr
                    assert not os.path.ismount(tmp_path / "c")
            finally:
                await h.close()
        finally:
            await c.close()
    asyncio.run(elsewhere())
    vol.mount("excl", tmp_path / "a", "--fs", "ext4")  # released: mountable at once
    vol.unmount(tmp_path / "a")


def test_write_across_a_snapshot_stays_readable(vol: Vol, tmp_path: Path) -> None:
    """Issue 12: a write sealed before a snapshot bumped the generation commits readable."""
    vol.run("create", "snapio", "--size", "64M")
    d = tmp_path / "raw"
    vol.mount("snapio", d)
    first, second = os.urandom(4 << 20), os.urandom(4 << 20)
    fd = os.open(d / "volume", os.O_WRONLY)
    try:
        os.pwrite(fd, first, 0)
        os.fsync(fd)
        vol.run("snapshot", "create", "snapio", "s1")
        os.pwrite(fd, second, 16 << 20)
        os.fsync(fd)
    finally:
        os.close(fd)
    vol.unmount(d)
    vol.mount("snapio", d)
    fd = os.open(d / "volume", os.O_RDONLY)
    try:
        assert os.pread(fd, len(first), 0) == first
        assert os.pread(fd, len(second), 16 << 20) == second
    finally:
        os.close(fd)
    vol.unmount(d)


def test_sigkill_after_fsync_keeps_data(vol: Vol, tmp_path: Path) -> None:
    vol.run("create", "crash", "--size", "128M")
    mnt = tmp_path / "mnt"
    vol.mount("crash", mnt, "--fs", "ext4", "--lease-ttl", "3")
    sums = write_tree(mnt, seed=2, files=20)
    sync_tree(mnt)
    (mnt / "unsynced").write_bytes(os.urandom(3 << 20))  # may or may not survive
    state = next(s for s in _states(vol) if s.volume == "crash")
    os.kill(state.pid, signal.SIGKILL)
    r = vol.run("unmount", str(mnt), check=False)  # ext4 sees EIO; the rest is undone
    vol.mounts.remove(mnt)
    assert r.returncode == 1 and "may have been lost" in r.stderr, r.stderr
    assert "all writes committed" not in r.stdout + r.stderr
    # The dead daemon's lease (a process gone from this host) is taken over at once.
    vol.mount("crash", mnt, "--fs", "ext4")
    verify_tree(mnt, sums)
    vol.unmount(mnt)
    fsck_clean(vol, "crash", tmp_path)


def _states(vol: Vol):  # type: ignore[no-untyped-def]
    from gateway.block.mount import mounted_states

    return mounted_states(Path(vol.cluster.data))


def test_snapshot_clone_isolated(vol: Vol, tmp_path: Path) -> None:
    vol.run("create", "origin", "--size", "128M")
    mnt = tmp_path / "o"
    vol.mount("origin", mnt, "--fs", "ext4")
    before = write_tree(mnt, seed=3, files=20)
    sync_tree(mnt)
    vol.run("snapshot", "create", "origin", "s1")  # while mounted: quiesced, then frozen
    after = write_tree(mnt, seed=4, files=10)
    sync_tree(mnt)
    vol.run("clone", "origin@s1", "copy")
    cmnt = tmp_path / "c"
    vol.mount("copy", cmnt, "--fs", "ext4")
    verify_tree(cmnt, before)
    assert not any((cmnt / rel).exists() for rel in after)
    clone_only = write_tree(cmnt, seed=5, files=5)
    sync_tree(cmnt)
    vol.unmount(cmnt)
    verify_tree(mnt, after)
    assert not any((mnt / rel).exists() for rel in clone_only)
    vol.unmount(mnt)
    r = vol.run("snapshot", "delete", "origin", "s1", check=False)
    assert r.returncode == 1 and "clone" in r.stderr
    vol.run("flatten", "copy")
    vol.run("snapshot", "delete", "origin", "s1")
    fsck_clean(vol, "copy", tmp_path)
    fsck_clean(vol, "origin", tmp_path)
    vol.mount("copy", cmnt, "--fs", "ext4")
    verify_tree(cmnt, {**before, **clone_only})
    vol.unmount(cmnt)


@pytest.mark.parametrize("mode", ["journal", "no-journal"])
def test_snapshot_of_a_mount_is_taken_by_its_writer(vol: Vol, tmp_path: Path, mode: str) -> None:
    """The writer freezes a snapshot of its mount itself (a fold between a separate quiesce
    and the freeze could commit a later write without an earlier journaled one)."""
    name = f"snapw-{mode}"
    vol.run("create", name, "--size", "8M")
    raw = tmp_path / "raw"
    vol.mount(name, raw, *(["--no-journal"] if mode == "no-journal" else []))
    with open(raw / "volume", "r+b") as f:
        f.write(b"A" * 4096)  # a random page: journaled
        f.flush()
        os.fsync(f.fileno())
        f.seek(2 << 20)
        f.write(b"B" * (1 << 20))  # a whole extent: written directly
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(raw / "volume", os.O_RDONLY)
    try:
        os.setxattr(fd, SNAPSHOT_XATTR, b"s1")  # the daemon takes it (ENOTSUP before)
        with pytest.raises(OSError) as exc:
            os.setxattr(fd, SNAPSHOT_XATTR, b"s1")
        assert exc.value.errno == errno.EEXIST
    finally:
        os.close(fd)
    r = vol.run("snapshot", "create", name, "s1", check=False)  # the CLI asks it too
    assert r.returncode == 1 and "already has a snapshot 's1'" in r.stderr, r.stderr
    vol.run("snapshot", "create", name, "s2")
    names = [x["name"] for x in json.loads(vol.run("snapshot", "list", name, "--json").stdout)]
    assert names == ["s1", "s2"]
    vol.unmount(raw)
    for snap in ("s1", "s2"):
        vol.run("clone", f"{name}@{snap}", f"{name}-{snap}")
        craw = tmp_path / f"c-{snap}"
        vol.mount(f"{name}-{snap}", craw)
        with open(craw / "volume", "rb") as f:
            assert f.read(4096) == b"A" * 4096
            f.seek(2 << 20)
            assert f.read(1 << 20) == b"B" * (1 << 20)
        vol.unmount(craw)


def test_thin_provisioning(vol: Vol, tmp_path: Path) -> None:
    vol.run("create", "thin", "--size", "100G")
    d = tmp_path / "raw"
    vol.mount("thin", d)
    rng = random.Random(6)
    data = rng.randbytes(10 << 20)
    fd = os.open(d / "volume", os.O_WRONLY)
    try:
        os.pwrite(fd, data, 37 << 30)
        os.fsync(fd)
    finally:
        os.close(fd)
    vol.unmount(d)
    stripes = asyncio.run(_stripes_of(vol, "thin"))
    assert len(stripes) == 10
    wanted = {s.hex() for s in stripes}
    stored = sum(p.stat().st_size for files in vol.cluster.shard_files().values()
                 for p in files if p.name.split(".")[0] in wanted)
    assert 10 * (1 << 20) * 1.5 <= stored <= 10 * (1 << 20) * 1.5 * 1.05, stored
    vol.mount("thin", d)
    fd = os.open(d / "volume", os.O_RDONLY)
    try:
        assert os.pread(fd, len(data), 37 << 30) == data
        assert os.pread(fd, 1 << 20, 5 << 30) == bytes(1 << 20)
    finally:
        os.close(fd)
    vol.unmount(d)


def _stored_shard_bytes(vol: Vol, name: str) -> int:
    """Bytes on the nodes' disks of the stripes the volume's extent map points at."""
    wanted = {s.hex() for s in asyncio.run(_stripes_of(vol, name)) if s}
    # sizes as listed: a shard collected between the listing and a second look (the GC of
    # the stripes a trim or fold replaced) is not "holds no" (ci20a)
    return sum(p.size for files in vol.cluster.shard_files().values()
               for p in files if p.name.split(".")[0] in wanted)


def test_fstrim_frees_space(vol: Vol, tmp_path: Path) -> None:
    vol.run("create", "trim", "--size", "100G")
    mnt = tmp_path / "mnt"
    vol.mount("trim", mnt, "--fs", "ext4")
    st = next(s for s in _states(vol) if s.volume == "trim")
    assert st.loop is not None
    queue = Path("/sys/block") / Path(st.loop).name / "queue"
    assert int((queue / "discard_max_bytes").read_text()) > 0

    def barrier() -> None:  # the daemon folds everything accepted so far into extents
        fd = os.open(Path(st.fuse_dir) / "volume", os.O_RDONLY)
        try:
            os.fsync(fd)
            os.setxattr(fd, CHECKPOINT_XATTR, b"1")
        finally:
            os.close(fd)
    sync_tree(mnt)
    barrier()
    base = _stored_shard_bytes(vol, "trim")
    rng = random.Random(7)
    for i in range(10):
        (mnt / f"f{i}").write_bytes(rng.randbytes(1 << 20))
    sync_tree(mnt)
    for i in range(10):
        (mnt / f"f{i}").unlink()
    sync_tree(mnt)
    barrier()
    written = 10 * (1 << 20) * 1.5  # 10 MiB of data at 4+2 erasure overhead
    before = _stored_shard_bytes(vol, "trim")
    assert before >= base + 0.9 * written, (base, before)  # deleting alone frees nothing
    r = subprocess.run(["fstrim", "-v", str(mnt)], capture_output=True, text=True)
    assert r.returncode == 0 and "trimmed" in r.stdout, r.stdout + r.stderr
    barrier()
    after = _stored_shard_bytes(vol, "trim")
    assert before - after >= 0.7 * written, (base, before, after)
    vol.unmount(mnt)
    fsck_clean(vol, "trim", tmp_path)


def test_punch_hole_over_unflushed_writes(vol: Vol, tmp_path: Path) -> None:
    vol.run("create", "punch", "--size", "64M")
    d = tmp_path / "raw"
    vol.mount("punch", d)
    mib = 1 << 20
    data = random.Random(8).randbytes(3 * mib)
    fd = os.open(d / "volume", os.O_RDWR)
    try:
        os.pwrite(fd, data, mib + 4096)  # still in the write-back caches: no fsync yet
        # a hole over one whole extent (2 MiB..3 MiB) and part of two others, right away
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        punch_hole_keep_size = 0x02 | 0x01
        assert libc.fallocate(fd, punch_hole_keep_size, mib + 8192, 2 * mib + 4096) == 0, \
            os.strerror(ctypes.get_errno())
        want = data[:4096] + bytes(2 * mib + 4096) + data[2 * mib + 8192:]
        assert os.pread(fd, len(want), mib + 4096) == want
        os.fsync(fd)
    finally:
        os.close(fd)
    vol.unmount(d)  # a later flush must not bring the punched bytes back
    vol.mount("punch", d)
    fd = os.open(d / "volume", os.O_RDONLY)
    try:
        assert os.pread(fd, len(want), mib + 4096) == want
    finally:
        os.close(fd)
    vol.unmount(d)
    stored = json.loads(vol.run("show", "punch", "--json").stdout)["stored_bytes"]
    assert stored == 3 * mib, stored  # extents 1, 3, 4 hold data; extent 2 is a hole


async def _open(vol: Vol) -> tuple[Cluster, VolumeService]:
    c = await Cluster.open(load_config(Path(vol.cluster.env["TESSERA_CONFIG"])))
    return c, VolumeService(c.cfg, c.meta, c.tenants, c.stripes)


async def _stripes_of(vol: Vol, name: str) -> list[bytes]:
    from storage.volumes import decode_pointer

    c, svc = await _open(vol)
    try:
        v = await svc.get("default", name)
        items = await c.meta.range(extent_prefix(v.id), extent_prefix(v.id) + b"\xff")
        return [decode_pointer(i.value).stripe for i in items]
    finally:
        await c.close()


def test_fencing_and_takeover(vol: Vol) -> None:
    async def go() -> None:
        c, svc = await _open(vol)
        try:
            await svc.create("default", "fence", 16 << 20)
            h1 = await svc.open("default", "fence", holder="one", lease_ttl_s=1.0)
            await h1.write(0, b"a" * 4096)
            with pytest.raises(VolumeAttached):
                await svc.open("default", "fence", holder="two", lease_ttl_s=1.0)
            assert h1._renewer is not None
            h1._renewer.cancel()  # a hung writer: stops renewing
            deadline = time.monotonic() + 10
            while True:
                try:
                    h2 = await svc.open("default", "fence", holder="two", lease_ttl_s=5.0)
                    break
                except VolumeAttached:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            assert h2.token == h1.token + 1
            with pytest.raises(Fenced):
                await h1.write(0, b"b" * 4096)
            await h2.write(4096, b"c" * 4096)
            assert await h2.read(0, 8192) == b"a" * 4096 + b"c" * 4096
            await h2.close()
        finally:
            await c.close()
    asyncio.run(go())


def test_a_writer_resumed_past_its_lease_serves_no_io(vol: Vol, tmp_path: Path) -> None:
    """atkblock20: a daemon stopped (SIGSTOP) past its lease while another mount took the
    volume over and wrote to it answered, once resumed, reads from its overlay and cache
    (the old bytes) and took writes into memory as if it still held the volume: it never
    counted its lease's time itself, and its fencing reached commits only. Reads and
    writes reaching it (O_DIRECT: past the kernel's page cache) are now EIO."""
    from tests.integration.test_volume_fencing import (
        daemon_pid,
        mount_when_free,
        stop_outside_a_commit,
    )

    vol.run("create", "paused", "--size", "8M")
    a, b = tmp_path / "a", tmp_path / "b"
    vol.mount("paused", a, "--lease-ttl", "2")
    page = mmap.mmap(-1, 4096)  # O_DIRECT wants an aligned buffer
    page.write(b"X" * 4096)
    fd = os.open(a / "volume", os.O_RDWR | os.O_DIRECT)
    try:
        assert os.pwritev(fd, [page], 0) == 4096
        os.fsync(fd)
    finally:
        os.close(fd)
    pid_a = daemon_pid(vol, a)
    stop_outside_a_commit(vol, pid_a)  # (not inside a renewal's SQLite commit: 7b9d2240)
    try:
        mount_when_free(vol, "paused", b)
        fd = os.open(b / "volume", os.O_RDWR)
        try:
            os.pwrite(fd, b"Y" * 4096, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        os.kill(pid_a, signal.SIGCONT)
    fd = os.open(a / "volume", os.O_RDWR | os.O_DIRECT)
    try:
        with pytest.raises(OSError) as read_err:
            got = os.preadv(fd, [page], 0)
            print(f"the fenced daemon answered {got} bytes: {page[:4]!r}")
        assert read_err.value.errno == errno.EIO
        with pytest.raises(OSError) as write_err:
            os.pwritev(fd, [page], 4096)
        assert write_err.value.errno == errno.EIO
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    r = vol.run("unmount", str(a), check=False)
    vol.mounts.remove(a)
    assert r.returncode == 1 and "may have been lost" in r.stderr, r.stderr
    fd = os.open(b / "volume", os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == b"Y" * 4096
        assert os.pread(fd, 4096, 4096) == bytes(4096)
    finally:
        os.close(fd)
    vol.unmount(b)


def test_unreadable_extent_is_an_error(vol: Vol) -> None:
    async def go() -> None:
        c, svc = await _open(vol)
        try:
            await svc.create("default", "broken", 8 << 20)
            h = await svc.open("default", "broken", holder="t")
            await h.write(1 << 20, os.urandom(1 << 20))
            stripe = h.pointer(1).stripe  # type: ignore[union-attr]
            for files in vol.cluster.shard_files().values():
                for p in files:
                    if p.name.startswith(stripe.hex()) and not p.name.endswith((".0", ".1")):
                        p.unlink()
            h._ciphers.clear()
            with pytest.raises(DataUnavailable):
                await h.read(1 << 20, 4096)
            assert await h.read(0, 4096) == bytes(4096)  # never written: zeros
            await h.close()
        finally:
            await c.close()
    asyncio.run(go())



def test_service_lifecycle(vol: Vol) -> None:
    async def go() -> None:
        c, svc = await _open(vol)
        try:
            v = await svc.create("default", "life", 8 << 20)
            h = await svc.open("default", "life", holder="t")
            await h.write(100, b"x" * 5000)  # partial extent: read-modify-write
            await h.close()
            await svc.snapshot("default", "life", "s1")
            h = await svc.open("default", "life", holder="t")
            await h.write(0, b"y" * 200)
            await h.trim(1 << 20, 1 << 20)
            await h.close()
            await svc.resize("default", "life", 16 << 20)
            snap = await svc.open("default", "life", holder="r", snapshot="s1")
            assert await snap.read(0, 6000) == bytes(100) + b"x" * 5000 + bytes(900)
            h = await svc.open("default", "life", holder="t")
            assert h.vol.size == 16 << 20
            assert await h.read(0, 300) == b"y" * 200 + b"x" * 100
            assert await h.read(15 << 20, 10) == bytes(10)
            await h.close()
            await svc.snapshot("default", "life", "s2")
            await svc.clone("default", "life", "s2", "life-c")
            with pytest.raises(Conflict, match="life-c"):
                await svc.delete_snapshot("default", "life", "s2")
            await svc.delete_snapshot("default", "life", "s1")  # the clone holds s2 only
            await svc.delete("default", "life-c")
            await svc.delete_snapshot("default", "life", "s2")
            await svc.delete("default", "life")
            assert v.name not in [x.name for x in await svc.list("default")]
            items = await c.meta.range(extent_prefix(v.id), extent_prefix(v.id) + b"\xff")
            assert items == []
        finally:
            await c.close()
    asyncio.run(go())


def test_max_dirty_mib_is_the_daemons_bound(vol: Vol, tmp_path: Path) -> None:
    """`volume mount --max-dirty-mib` sets how many written bytes the daemon holds in memory
    (its log says so at attach); a bound below 1 MiB is refused before anything starts."""
    vol.run("create", "bound", "--size", "16M")
    r = vol.run("mount", "--max-dirty-mib", "0", "bound", str(tmp_path / "no"), check=False)
    assert r.returncode == 2 and "at least 1" in r.stderr, r.stderr
    mnt = tmp_path / "raw"
    for extra, mib in (((), 256), (("--max-dirty-mib", "3"), 3)):  # the default, then 3
        vol.mount("bound", mnt, *extra)
        state = next(s for s in _states(vol) if s.volume == "bound")
        assert f"journal: holding up to {mib} MiB of writes in memory" in Path(
            state.log).read_text()[state.log_offset:]
        vol.unmount(mnt)


def test_kernel_dirty_mib_is_the_fuse_mounts_writeback_budget(vol: Vol, tmp_path: Path) -> None:
    """`volume mount` gives the kernel a write-back budget for the volume (default 512 MiB,
    half of it a floor), so random pages are coalesced before the daemon sees them; 0
    leaves the kernel's own strict share (no floor)."""
    vol.run("create", "wb", "--size", "16M")
    mnt = tmp_path / "raw"
    for extra, mib in (((), 512), (("--kernel-dirty-mib", "0"), 0)):
        vol.mount("wb", mnt, *extra)
        d = bdi_dir(mnt)
        floor, bound = (int((d / f).read_text()) for f in ("min_bytes", "max_bytes"))
        assert abs(bound - (mib << 20)) < 1 << 20 if mib else bound < 512 << 20, bound
        assert abs(floor - (mib << 19)) < 1 << 20 if mib else floor == 0, floor
        vol.unmount(mnt)
        _until_gone(d)


def _until_gone(bdi: Path, bound_s: float = 30.0) -> None:
    """Until an unmounted FUSE mount's bdi has left sysfs: the kernel frees the mount's
    device number before its bdi, so the next mount can get the same number while the old
    `MAJOR:MINOR` directory (with the old budget) still stands, and reading it then reads
    the old mount's values (seen once in CI under load). Bounded: on a kernel that keeps
    it longer the next read shows why."""
    deadline = time.monotonic() + bound_s
    while bdi.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_mount_refusals_say_what_to_do(vol: Vol, tmp_path: Path) -> None:
    """An --fs this machine cannot make, an --fs other than the one the volume holds and a
    mount point whose parent is missing: each refused in one line that says what to do,
    nothing mounted, no directory made (newuser15: a bare mount(8) line, an Errno, and
    /nonexistent/dir created silently)."""
    vol.run("create", "refuse", "--size", "64M")
    vol.mount("refuse", tmp_path / "a", "--fs", "ext4")
    vol.unmount(tmp_path / "a")

    def refused(*args: str) -> str:
        r = vol.run("mount", *args, check=False)
        assert r.returncode == 1, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        return r.stderr

    err = refused("--fs", "foo", "refuse", str(tmp_path / "b"))
    assert "unsupported file system 'foo'" in err and "ext4" in err, err
    assert not os.path.ismount(tmp_path / "b")
    if shutil.which("mkfs.xfs"):
        err = refused("--fs", "xfs", "refuse", str(tmp_path / "c"))
        assert "holds an ext4 file system, not xfs: mount it with --fs ext4" in err, err
        assert not os.path.ismount(tmp_path / "c")
    deep = tmp_path / "missing" / "dir"
    err = refused("--fs", "ext4", "refuse", str(deep))
    assert f"parent directory {deep.parent} does not exist" in err, err
    assert not deep.parent.exists()
    assert not [s for s in _states(vol) if s.volume == "refuse"]


def test_origin_is_the_snapshots_name_and_a_bad_export_path_says_what_to_do(
        vol: Vol, tmp_path: Path) -> None:
    """`list` showed a clone's origin as `vol@2` (the generation) for a snapshot the user named
    `s2`; export to a missing directory printed a raw `[Errno 2] ...` and left the volume's
    attach lease held (newuser17)."""
    vol.run("create", "named", "--size", "8M")
    vol.run("snapshot", "create", "named", "s1")
    vol.run("snapshot", "create", "named", "s2")
    vol.run("clone", "named@s2", "named-copy")
    rows = [ln.split() for ln in vol.run("list").stdout.splitlines()]
    assert ["named-copy", "8.0", "MiB", "1.0", "MiB", "0", "named@s2"] in rows, rows
    (doc,) = [d for d in json.loads(vol.run("list", "--json").stdout) if d["name"] == "named-copy"]
    assert doc["base"]["snapshot"] == "s2" and doc["base"]["gen"] == 2, doc
    assert "origin:       named@s2 (generation 2)" in vol.run("show", "named-copy").stdout

    target = tmp_path / "nonexistent" / "dir" / "x.raw"
    r = vol.run("export", "named", str(target), check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "Errno" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert f"directory {tmp_path / 'nonexistent'} does not exist" in r.stderr, r.stderr
    assert not target.parent.exists()
    assert asyncio.run(_lease_left(vol, "named")) is None  # was held on, to its ttl
    image = tmp_path / "named.raw"
    vol.run("export", "named", str(image))
    assert image.stat().st_size == 8 * 1024 * 1024
    assert asyncio.run(_lease_left(vol, "named")) is None


async def _lease_left(vol: Vol, name: str) -> dict | None:
    """The attach lease record of `name` unless released: what another host would see as held
    until its ttl (this host sees the holder process gone)."""
    c, svc = await _open(vol)
    try:
        rec = await svc.lease((await svc.get("default", name)).id)
        return rec if rec and not rec.get("released") else None
    finally:
        await c.close()


def test_sigkilled_pytest_leaves_no_volume_mount(tmp_path: Path) -> None:
    """The FUSE daemon sees the test run end too: ext4 and the loop device over its file are
    undone, then its own FUSE mount, and it exits (as do the cluster's processes)."""
    run_and_kill(tmp_path, VOLUME_TEST)
