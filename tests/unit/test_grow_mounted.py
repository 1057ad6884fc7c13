"""`grow_mounted` names each mount of the volume on this host that it could not grow, and
what happened to it (review21d): a mount whose daemon is stopped (SIGSTOP, a debugger) or
that is still being mounted was skipped without a word, so `volume resize` said only "is
now N" (JSON and the admin API `mounts_grown: []`) and the mount kept its old size for
good; one whose daemon did not answer hung the resize; one whose file grew but whose loop
device did not was said to keep its old size."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.block import mount
from gateway.block.mount import MountState, _save, grow_mounted, mounts_dict

MiB = 1 << 20


def test_a_stopped_or_starting_mount_is_named_with_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stopped = subprocess.Popen(["sleep", "600"])
    running = subprocess.Popen(["sleep", "600"])
    try:
        stopped.send_signal(signal.SIGSTOP)
        os.waitpid(stopped.pid, os.WUNTRACED)  # returns once it is stopped
        for target, pid, starting, volume in (("a", stopped.pid, False, "v"),
                                              ("b", running.pid, True, "v"),
                                              ("c", running.pid, True, "other")):
            (tmp_path / f"fuse-{target}").mkdir()
            _save(data, MountState(volume=volume, tenant="t", target=str(tmp_path / target),
                                   fuse_dir=str(tmp_path / f"fuse-{target}"), pid=pid,
                                   starting=starting))
        out = {Path(st.target).name: why for st, why in grow_mounted(data, "t", "v", 32 * MiB)}
        assert set(out) == {"a", "b"}, out
        assert "stopped" in out["a"] and f"truncate -s {32 * MiB}" in out["a"], out
        assert "still being mounted" in out["b"], out
    finally:
        for p in (stopped, running):
            p.kill()
            p.wait()


@pytest.fixture
def daemon() -> Iterator[int]:
    """A running process standing in for a mount's daemon (grow_mounted asks only that it
    runs)."""
    p = subprocess.Popen(["sleep", "600"])
    yield p.pid
    p.kill()
    p.wait()


def _mount(data: Path, tmp_path: Path, target: str, pid: int, loop: str = "") -> Path:
    """A mount record whose "FUSE file" is a plain 16 MiB file; returns that file."""
    fuse = tmp_path / f"fuse-{target}"
    fuse.mkdir()
    (fuse / "volume").write_bytes(b"")
    os.truncate(fuse / "volume", 16 * MiB)
    _save(data, MountState(volume="v", tenant="t", target=str(tmp_path / target),
                           fuse_dir=str(fuse), pid=pid, loop=loop))
    return fuse / "volume"


def test_a_mount_that_does_not_answer_is_named_within_the_bound(
        tmp_path: Path, daemon: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """review21d F3: the truncate waits on the mount's daemon, and one that never answered
    hung `volume resize` (and held an admin request) after the resize was committed. Here
    the truncate is held by a file lease another process keeps (the kernel breaks it only
    after lease-break-time, 45 s): the mount is named as not answering, and nothing waits
    for that truncate (on the old code, grow_mounted waited it out and said it grew)."""
    data = tmp_path / "data"
    file = _mount(data, tmp_path, "a", daemon)
    monkeypatch.setattr(mount, "GROW_ANSWER_S", 1.0)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, signal, sys\n"
         "signal.signal(signal.SIGIO, signal.SIG_IGN)\n"  # the lease break's notice
         "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
         "fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)\n"
         "print('held', flush=True)\n"
         "sys.stdin.read()\n", str(file)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        (st, why), = grow_mounted(data, "t", "v", 32 * MiB)
        assert why.startswith("did not answer within 1 s") and f"daemon {daemon}" in why, why
        assert f"truncate -s {32 * MiB} {file}" in why, why
        assert mounts_dict([(st, why)]) == {
            "mounts_grown": [], "mounts_not_grown": [{"target": st.target, "why": why}]}
    finally:
        holder.communicate("")  # the lease goes with it
    assert file.stat().st_size == 16 * MiB  # the truncate was abandoned, not left pending


def test_a_loop_device_that_did_not_take_the_capacity_is_said_apart_from_the_file(
        tmp_path: Path, daemon: int) -> None:
    """review21d F4: when `losetup --set-capacity` failed after the FUSE file grew, the
    mount was said to keep its old size until remounted, yet its file had grown. Now each
    step is said as it went; a mount without a loop device is grown."""
    data = tmp_path / "data"
    raw = _mount(data, tmp_path, "raw", daemon)
    fs = _mount(data, tmp_path, "fs", daemon, loop=str(tmp_path / "no-such-loop"))
    out = {Path(st.target).name: why for st, why in grow_mounted(data, "t", "v", 32 * MiB)}
    assert out["raw"] == "" and raw.stat().st_size == 32 * MiB, out
    assert fs.stat().st_size == 32 * MiB
    assert out["fs"].startswith(f"grew its FUSE file {fs} to {32 * MiB} bytes, but its loop "
                                f"device {tmp_path / 'no-such-loop'} kept its old capacity ("
                                ), out
    assert out["fs"].endswith(f"): losetup --set-capacity {tmp_path / 'no-such-loop'}"), out
