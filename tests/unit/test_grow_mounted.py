"""`grow_mounted` names each mount of the volume on this host that it could not grow
(review21d): a mount whose daemon is stopped (SIGSTOP, a debugger) or that is still being
mounted was skipped without a word, so `volume resize` said only "is now N" (JSON and the
admin API `mounts_grown: []`) and the mount kept its old size for good."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from gateway.block.mount import MountState, _save, grow_mounted

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
