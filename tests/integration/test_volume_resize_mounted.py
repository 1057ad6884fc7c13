"""`tessera volume resize` of a mounted volume (block21): the mount sees the new size.

The resize was taken (the record grew, a snapshot and a clone of it had the new size), but
the mounted file kept the size it had at mount: a write past the old end was ENOSPC, and a
loop device under a file system kept its capacity, until a remount. Now the command grows
the mounts of this host: the FUSE file takes the size of the record (the daemon reads it),
and a loop device the new capacity, so `resize2fs` can grow the file system on line.
Needs root, /dev/fuse and fuse3, as tests/integration/test_volumes.py.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.test_volume_fencing import read_at
from tests.integration.test_volumes import (  # noqa: F401 - same fixtures and requirements
    Vol,
    _states,
    fsck_clean,
    pytestmark,
    vol,
)

MiB = 1 << 20


def test_a_raw_mount_grows_and_its_snapshot_holds_the_writes_past_the_old_end(
        vol: Vol, tmp_path: Path) -> None:  # noqa: F811
    vol.run("create", "grow", "--size", "16M")
    a = tmp_path / "a"
    vol.mount("grow", a)
    fd = os.open(a / "volume", os.O_RDWR)
    try:
        os.pwrite(fd, b"1" * 4096, 16 * MiB - 4096)
        os.fsync(fd)
        out = vol.run("resize", "grow", "--size", "32M").stdout
        assert os.fstat(fd).st_size == 32 * MiB
        assert "is now 32.0 MiB" in out and "volume is 32.0 MiB too" in out, out
        os.pwrite(fd, b"2" * 4096, 20 * MiB)  # past the old end
        os.pwrite(fd, b"3" * 4096, 32 * MiB - 4096)
        os.fsync(fd)
    finally:
        os.close(fd)
    vol.run("snapshot", "create", "grow", "s1")
    vol.run("clone", "grow@s1", "grow-c")
    c = tmp_path / "c"
    vol.mount("grow-c", c)
    assert (c / "volume").stat().st_size == 32 * MiB
    for page, offset in ((b"1", 16 * MiB - 4096), (b"2", 20 * MiB), (b"3", 32 * MiB - 4096)):
        assert read_at(c / "volume", 4096, offset) == page * 4096, offset
    vol.unmount(c)
    vol.unmount(a)
    vol.mount("grow", a)  # and what the volume itself holds
    assert read_at(a / "volume", 4096, 20 * MiB) == b"2" * 4096
    vol.unmount(a)


def test_an_ext4_mounts_loop_device_takes_the_new_capacity(vol: Vol, tmp_path: Path) -> None:  # noqa: F811
    """What `resize2fs` (on line) needs: the loop device under the file system is as large
    as the volume now. (resize2fs itself needs CAP_SYS_RESOURCE for an on-line resize, which
    a container may not have: not run here.)"""
    vol.run("create", "growfs", "--size", "64M")
    m = tmp_path / "m"
    vol.mount("growfs", m, "--fs", "ext4")
    (m / "f").write_bytes(b"x" * MiB)
    out = vol.run("resize", "growfs", "--size", "128M").stdout
    loop = next(s.loop for s in _states(vol) if s.target == str(m.resolve()))
    assert loop
    size = subprocess.run(["blockdev", "--getsize64", loop], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert int(size) == 128 * MiB
    assert f"resize2fs {loop}" in out, out
    (m / "g").write_bytes(b"y" * MiB)
    os.sync()
    vol.unmount(m)
    fsck_clean(vol, "growfs", tmp_path)


def test_a_resize_through_the_admin_api_grows_a_mount_on_its_host(
        vol: Vol, tmp_path: Path) -> None:  # noqa: F811
    from tests.integration.test_admin_volumes import ok

    vol.run("create", "growapi", "--size", "8M")
    a = tmp_path / "a"
    vol.mount("growapi", a)
    out = ok(vol.cluster, "POST", "/tenants/default/volumes/growapi/resize", {"size": 16 * MiB})
    assert (a / "volume").stat().st_size == 16 * MiB
    assert out["size"] == 16 * MiB and out["mounts_grown"] == [str(a.resolve())], out
    assert out["mounts_not_grown"] == [], out
    vol.unmount(a)


def resize_record(vol: Vol, tenant: str, name: str, size: int) -> None:  # noqa: F811
    """Resize the volume's record only: what a resize on another host leaves this one."""
    import asyncio

    from tests.integration.test_volumes import _open

    async def resize() -> None:
        c, svc = await _open(vol)
        try:
            await svc.resize(tenant, name, size)
        finally:
            await c.close()
    asyncio.run(resize())


def wait_for_size(size_of: Callable[[], int], size: int, log: str) -> None:
    """Poll until `size_of()` is `size` (three renewals are 3 s here; bounded at 30 s)."""
    deadline = time.monotonic() + 30
    while size_of() != size:
        assert time.monotonic() < deadline, Path(log).read_text()[-3000:]
        time.sleep(0.1)  # polling the size, not waiting for time to pass


def test_a_resize_taken_on_another_host_reaches_the_mount_within_a_renewal(
        vol: Vol, tmp_path: Path) -> None:  # noqa: F811
    """block22: a resize grows only the mounts of the host it ran on; a mount elsewhere kept
    its old size until remounted. The resize here is the record's alone (what another
    host's CLI or admin API leaves this host): the daemon reads the record on its renewal
    (ttl/3, 1 s here) and grows its FUSE file and the loop device over it."""
    vol.run("create", "growelse", "--size", "64M")
    m = tmp_path / "m"
    vol.mount("growelse", m, "--fs", "ext4", "--lease-ttl", "3")
    st = next(s for s in _states(vol) if s.target == str(m.resolve()))
    assert st.loop
    resize_record(vol, st.tenant, "growelse", 128 * MiB)

    def capacity() -> int:
        return int(subprocess.run(["blockdev", "--getsize64", st.loop], capture_output=True,
                                  text=True, check=True).stdout)
    wait_for_size(capacity, 128 * MiB, st.log)
    assert (Path(st.fuse_dir) / "volume").stat().st_size == 128 * MiB
    vol.unmount(m)  # (the file system over the grown device: the test above)


def test_a_resize_during_a_handover_reaches_the_new_writer_and_not_the_stopped_one(
        vol: Vol, tmp_path: Path) -> None:  # noqa: F811
    """block22 attack: writer A stopped (SIGSTOP) past its lease, B attached, the volume
    resized (on another host) while A is stopped. B grows and holds a write past the old
    end; A, resumed, is fenced: it neither grows nor writes; the volume holds B's bytes."""
    from tests.integration.test_volume_fencing import (
        daemon_pid,
        mount_when_free,
        stop_outside_a_commit,
        write_at,
    )

    vol.run("create", "growho", "--size", "32M")
    a, b = tmp_path / "a", tmp_path / "b"
    vol.mount("growho", a, "--lease-ttl", "2")
    pid_a = daemon_pid(vol, a)
    stop_outside_a_commit(vol, pid_a)
    try:
        mount_when_free(vol, "growho", b, "--lease-ttl", "3")
        st = next(s for s in _states(vol) if s.target == str(b.resolve()))
        resize_record(vol, st.tenant, "growho", 64 * MiB)
        wait_for_size(lambda: (b / "volume").stat().st_size, 64 * MiB, st.log)
        write_at(b / "volume", b"B" * 4096, 48 * MiB)
    finally:
        os.kill(pid_a, signal.SIGCONT)
    r = subprocess.run([sys.executable, "-c", WRITE_PAST, str(a / "volume")],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == f"errno {errno.EIO}", r
    assert (a / "volume").stat().st_size == 32 * MiB
    vol.run("unmount", str(a), check=False)  # A has nothing to flush; the answer may vary
    vol.mounts.remove(a)
    # B, the writer, still holds its size and its page (no remount: B's fsynced write
    # surviving a remount is test_volume_fencing's; review22g F10)
    assert (b / "volume").stat().st_size == 64 * MiB
    assert read_at(b / "volume", 4096, 48 * MiB) == b"B" * 4096
    assert read_at(b / "volume", 4096, 0) == bytes(4096)
    vol.unmount(b)


# a stale writer's write inside its old size and one past it, each fsynced: errno of the first
WRITE_PAST = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    for off in (0, 48 << 20):
        os.pwrite(fd, b"A" * 4096, off)
        os.fsync(fd)
    print("committed", flush=True)
except OSError as exc:
    print(f"errno {exc.errno}", flush=True)
try:
    os.close(fd)
except OSError:
    pass
"""
