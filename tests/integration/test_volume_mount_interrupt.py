"""`tessera volume mount` stopped while its FUSE daemon starts (lows18): Ctrl-C stops the
daemon and leaves nothing mounted or recorded; a command killed outright leaves a record
`tessera volume unmount DIR` undoes, never a daemon mounted with no record (before, the
record was written only once the daemon was ready, and a daemon that mounted after its
command was gone was known to nobody).

Needs root, /dev/fuse and fuse3, as tests/integration/test_volumes.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.pids import pid_running
from tests.integration.test_volumes import Vol, _states

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"),
    reason="block volume tests need root, /dev/fuse and fuse3")

DEADLINE_S = 120.0  # bounds the condition waits below (the daemon starts in seconds)


@pytest.fixture
def vol(cluster) -> Iterator[Vol]:  # type: ignore[no-untyped-def]
    v = Vol(cluster)
    yield v
    v.cleanup()


def _wait(cond, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _daemon_of(pid: int) -> int | None:
    """The pid of the FUSE daemon process `pid` started, once it exists."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (p / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"gateway.block.fuse" in cmd:
            return int(p.name)
    return None


def _start_mount(vol: Vol, name: str, target: Path) -> tuple[subprocess.Popen[str], int]:
    """A mount command, and its daemon's pid once the daemon process exists (not ready)."""
    cli = subprocess.Popen([sys.executable, "-m", "ops.cli", "volume", "mount", name,
                            str(target)], env=vol.env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    daemon: list[int] = []

    def started() -> bool:
        assert cli.poll() is None, cli.communicate()
        found = _daemon_of(cli.pid)
        daemon.extend([found] if found else [])
        return bool(daemon)
    _wait(started, "the FUSE daemon to be started")
    return cli, daemon[0]


def test_ctrl_c_while_the_daemon_starts_leaves_nothing_mounted(vol: Vol,
                                                               tmp_path: Path) -> None:
    name = f"int-{uuid.uuid4().hex[:6]}"
    vol.run("create", name, "--size", "16M")
    target = tmp_path / "m"
    cli, daemon = _start_mount(vol, name, target)
    cli.send_signal(signal.SIGINT)
    _, err = cli.communicate(timeout=DEADLINE_S)
    try:
        assert cli.returncode == 130, err
        assert not pid_running(daemon)
        assert not os.path.ismount(target)
        assert str(target.resolve()) not in [s.target for s in _states(vol)]
    finally:
        if os.path.ismount(target):
            subprocess.run(["fusermount3", "-u", "-z", str(target)], capture_output=True)
    vol.mount(name, target)  # its lease was let go: the volume mounts again at once
    vol.unmount(target)


def test_a_killed_mount_command_leaves_a_mount_unmount_undoes(vol: Vol,
                                                              tmp_path: Path) -> None:
    name = f"kil-{uuid.uuid4().hex[:6]}"
    vol.run("create", name, "--size", "16M")
    target = tmp_path / "m"
    cli, daemon = _start_mount(vol, name, target)
    cli.kill()
    cli.communicate(timeout=DEADLINE_S)
    try:
        # the daemon, in a session of its own, mounts on or fails: either way it is known
        _wait(lambda: os.path.ismount(target) or not pid_running(daemon), "the daemon to mount")
        assert str(target.resolve()) in [s.target for s in _states(vol)]
        r = vol.run("unmount", str(target), check=False)
        assert r.returncode == 0, r.stderr
        assert not os.path.ismount(target)
        assert not pid_running(daemon)
        assert str(target.resolve()) not in [s.target for s in _states(vol)]
    finally:
        if os.path.ismount(target):
            subprocess.run(["fusermount3", "-u", "-z", str(target)], capture_output=True)
        if pid_running(daemon):
            os.kill(daemon, signal.SIGKILL)


async def _leave_dead_elsewhere(vol: Vol, name: str, ttl: float) -> None:
    """`name`'s attach lease names a writer on another host that stopped renewing it (its
    record's ttl `ttl`): only a watch of that long can tell it is gone."""
    from tests.integration.test_volumes import _open
    from tests.unit.test_volume_lease_watch import lease_dead_elsewhere

    c, svc = await _open(vol)
    try:
        await svc.create("default", name, 16 << 20)
        h = await svc.open("default", name, holder="elsewhere:1")
        await h.close()
        await lease_dead_elsewhere(c.meta, h.vol.id, ttl)
    finally:
        await c.close()


def test_mount_and_delete_say_what_they_wait_for(vol: Vol, tmp_path: Path) -> None:
    """A volume whose writer died on another host: mount and delete say whose lease they
    watch, for how long, and what is left, instead of waiting silently; the mount's daemon
    takes the lease its command watched without a second watch."""
    import asyncio

    name = f"wat-{uuid.uuid4().hex[:6]}"
    asyncio.run(_leave_dead_elsewhere(vol, name, 2.0))
    target = tmp_path / "m"
    r = vol.run("mount", name, str(target))
    vol.mounts.append(target)
    assert ("attach lease names elsewhere:1" in r.stderr and "watching the lease up to 2s"
            in r.stderr and "before mounting it" in r.stderr), r.stderr
    vol.unmount(target)
    asyncio.run(_leave_dead_elsewhere(vol, name + "d", 2.0))
    r = vol.run("delete", name + "d")
    assert "watching the lease up to 2s" in r.stderr and "before deleting it" in r.stderr
    assert "no renewal yet" in r.stderr, r.stderr


def test_ctrl_c_after_the_daemon_is_ready_leaves_exit_code_and_mount_agreeing(
        vol: Vol, tmp_path: Path) -> None:
    """review18c L4: Ctrl-C once the FUSE daemon is ready (the command then confirms the
    lease, sets up the loop device, makes and mounts ext4) was not looked at: the command
    exited 130 and the volume ended up mounted. Now the exit code says what is left: 130
    with nothing mounted or recorded (an interrupt before the mount completed undoes it),
    or 0 with the volume mounted and a message saying the interrupt came too late."""
    name = f"rdy-{uuid.uuid4().hex[:6]}"
    vol.run("create", name, "--size", "16M")
    target = tmp_path / "m"
    before = {s.target for s in _states(vol)}
    cli = subprocess.Popen([sys.executable, "-m", "ops.cli", "volume", "mount", "--fs", "ext4",
                            name, str(target)], env=vol.env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    fuse: list[str] = []

    def ready() -> bool:  # the daemon's FUSE mount exists: wait_ready has returned or will
        assert cli.poll() is None, cli.communicate()
        fuse.extend(s.fuse_dir for s in _states(vol) if s.target not in before
                    and os.path.ismount(s.fuse_dir))
        return bool(fuse)
    _wait(ready, "the FUSE daemon to be ready")
    cli.send_signal(signal.SIGINT)
    out, err = cli.communicate(timeout=DEADLINE_S)
    try:
        recorded = str(target.resolve()) in [s.target for s in _states(vol)]
        if cli.returncode == 0:
            assert os.path.ismount(target) and recorded, err
            assert "stays mounted" in err and "mounted on" in out
            vol.mounts.append(target)
        else:
            assert cli.returncode == 130, err
            assert not os.path.ismount(target), "exit 130, yet the volume is mounted"
            assert not recorded and not os.path.ismount(fuse[0])
            assert "nothing is mounted" in err
            vol.mount(name, target, "--fs", "ext4")  # its lease was let go
        vol.unmount(target)
    finally:
        if os.path.ismount(target):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_an_interrupt_after_the_daemon_is_ready_undoes_the_mount(vol: Vol,
                                                                 tmp_path: Path) -> None:
    """The step after readiness sees the interrupt (here set while the lease is confirmed,
    as a Ctrl-C then would): `mount` undoes the FUSE mount, stops the daemon, drops the
    record and raises MountInterrupted; before, it went on and returned the mount made."""
    from gateway.block.mount import MountError, mount, unmount

    name = f"stp-{uuid.uuid4().hex[:6]}"
    vol.run("create", name, "--size", "16M")
    shown = json.loads(vol.run("show", name, "--json").stdout)
    config = Path(vol.cluster.data) / "tessera.toml"
    data = Path(tomllib.loads(config.read_text())["data_dir"])
    target = tmp_path / "m"
    stop = threading.Event()
    daemons: list[int] = []

    def confirm(pid: int) -> None:  # the interrupt arrives once the daemon is ready
        daemons.append(pid)
        stop.set()
    try:
        with pytest.raises(MountError, match="interrupted"):
            mount(config, data, shown["tenant"], name, shown["id"], target, None,
                  confirm=confirm, stop=stop)
        assert daemons and not pid_running(daemons[0])
        assert not os.path.ismount(target)
        assert str(target.resolve()) not in [s.target for s in _states(vol)]
    finally:
        if str(target.resolve()) in [s.target for s in _states(vol)]:
            unmount(data, target)
    vol.mount(name, target)  # its lease was let go: the volume mounts again at once
    vol.unmount(target)
