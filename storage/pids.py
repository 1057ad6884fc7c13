"""Whether a process id names a live process, without signalling it (kill with signal 0)."""

from __future__ import annotations

import os


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


__all__ = ["pid_alive"]
