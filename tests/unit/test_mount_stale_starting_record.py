"""review18c: `tessera volume unmount DIR` of a mount record left 'starting' (its mount
command was killed, then the daemon died or the host rebooted) signals the pid the record
names; once that pid is another process's, unmount must not SIGTERM/SIGKILL it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from gateway.block.mount import MountState, _state_path, unmount


def test_unmount_of_a_stale_starting_record_leaves_an_unrelated_process_alone(
        tmp_path: Path) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        target = tmp_path / "mnt"
        target.mkdir()
        data = tmp_path / "data"
        st = MountState(volume="v", tenant="t", target=str(target),
                        fuse_dir=str(tmp_path / "fuse"), pid=stranger.pid, fs=None,
                        log=str(tmp_path / "daemon.log"), starting=True)
        _state_path(data, target).write_text(json.dumps(dataclasses.asdict(st)))
        unmount(data, target)
        assert stranger.poll() is None, "unmount signalled a process that is no daemon"
    finally:
        stranger.kill()
        stranger.wait()


def test_unmount_of_a_pid_0_record_stops_the_daemon_it_names_by_command_line(
        tmp_path: Path) -> None:
    """review18c L4: a command killed between spawning its daemon and saving the daemon's
    pid leaves a 'starting' record of pid 0. `unmount` dropped it and left that daemon to
    go on and mount with no record; it now finds the daemon by its command line (this
    mount's FUSE directory) and stops it."""
    fuse_dir = tmp_path / "fuse"
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                               "gateway.block.fuse", "--mountpoint", str(fuse_dir)])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                              "gateway.block.fuse", "--mountpoint", str(tmp_path / "else")])
    try:
        target = tmp_path / "mnt"
        target.mkdir()
        data = tmp_path / "data"
        st = MountState(volume="v", tenant="t", target=str(target), fuse_dir=str(fuse_dir),
                        pid=0, fs=None, log=str(tmp_path / "daemon.log"), starting=True)
        _state_path(data, target).write_text(json.dumps(dataclasses.asdict(st)))
        unmount(data, target)
        # unmount returns once the daemon is gone (it may reap it: waitpid on a child)
        assert daemon.poll() is not None, "the pid-0 record's daemon was left running"
        assert other.poll() is None, "unmount stopped another mount's daemon"
        assert not _state_path(data, target).exists()
    finally:
        for p in (daemon, other):
            p.kill()
            p.wait()
