"""A child process that must not outlive its parent: PR_SET_PDEATHSIG (Linux), checked once.

Used by gateway workers (worker 0 is their parent) and `nodes.forker` (`tessera up` is its
parent): if the parent is SIGKILLed it has no chance to stop them, so the kernel does.
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int, parent: int | None) -> None:
    """Get `sig` when the parent exits, however it exits; exit now (status 0) if `parent`
    (the pid it had at start) is already gone. Does nothing where prctl is missing."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if parent is not None and os.getppid() != parent:
        sys.exit(0)  # the parent is already gone: the signal would never come
