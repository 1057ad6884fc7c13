"""Whether a process id names a live process, without signalling it (kill with signal 0),
or one that has not exited (its /proc state is not zombie)."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while `pid` exists (a zombie included), also when it is another user's
    (EPERM); False for pid <= 0, which would name a process group, not a process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_running(pid: int) -> bool:
    """True while `pid` exists and has not exited: a zombie (exited, its parent has not
    reaped it yet) counts as gone, unlike `pid_alive`. Linux: reads /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


__all__ = ["pid_alive", "pid_running"]
