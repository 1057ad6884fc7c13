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
