"""A child process that must not outlive its parent: PR_SET_PDEATHSIG (Linux), checked once.

Used by gateway workers (worker 0 is their parent), `nodes.forker` (`tessera up` is its
parent) and etcd members started from a main thread (a test run's): if the parent is
SIGKILLed it has no chance to stop them, so the kernel does.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable

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


def child_dies_with_us(sig: int) -> Callable[[], None] | None:
    """A `preexec_fn` giving a child we start (any program: etcd) `sig` when we exit, however
    we exit; None off Linux or off the main thread, as the kernel sends it when the forking
    *thread* exits (a pool thread could end while the child should go on)."""
    if not sys.platform.startswith("linux") or \
            threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec
